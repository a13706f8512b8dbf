"""A third-party OAuth 2 client (Python's authlib) against a running Cocon: dynamic
registration, authorization code with PKCE S256 and state, the token exchange, an API call,
refresh-token rotation, and reuse detection. The person's consent is given with their session
cookie, as their browser would.

Usage: authlib_client.py BASE_URL DOMAIN SESSION_COOKIE
Prints one JSON line with what it observed; exits non-zero on any unexpected answer.
"""

import html
import json
import re
import secrets
import sys

import requests
from authlib.integrations.requests_client import OAuth2Session

base, domain, session_cookie = sys.argv[1:4]
redirect_uri = "http://127.0.0.1:9/callback"
scope = "io.cozy.notes"


def check(condition, what):
    if not condition:
        sys.exit(f"unexpected: {what}")


http = requests.Session()
http.headers["Host"] = domain

# RFC 7591 registration, as any client would.
reg = http.post(
    f"{base}/auth/register",
    json={
        "redirect_uris": [redirect_uri],
        "client_name": "authlib test client",
        "software_id": "authlib",
        "token_endpoint_auth_method": "client_secret_basic",
    },
)
check(reg.status_code == 201, f"registration {reg.status_code} {reg.text}")
client = reg.json()

oauth = OAuth2Session(
    client["client_id"],
    client["client_secret"],
    scope=scope,
    redirect_uri=redirect_uri,
    code_challenge_method="S256",
    token_endpoint_auth_method="client_secret_basic",
)
oauth.headers["Host"] = domain
verifier = secrets.token_urlsafe(48)
url, state = oauth.create_authorization_url(f"{base}/auth/authorize", code_verifier=verifier)

# The person's browser: the consent page, then "Give access".
browser = requests.Session()
browser.headers["Host"] = domain
browser.cookies.set("cozysessid", session_cookie)
page = browser.get(url, allow_redirects=False)
check(page.status_code == 200, f"consent page {page.status_code}")
fields = dict(
    (m.group(1), html.unescape(m.group(2)))
    for m in re.finditer(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', page.text)
)
fields["approve"] = "1"
answer = browser.post(f"{base}/auth/authorize", data=fields, allow_redirects=False)
check(answer.status_code == 302, f"consent answer {answer.status_code} {answer.text}")
location = answer.headers["Location"]
check(location.startswith(redirect_uri), f"redirected to {location}")

# authlib checks the state and sends the verifier.
token = oauth.fetch_token(f"{base}/auth/access_token", authorization_response=location, code_verifier=verifier)
check(token["token_type"].lower() == "bearer", f"token {token}")
created = oauth.post(f"{base}/data/io.cozy.notes/", json={"title": "written by authlib"})

first_refresh = token["refresh_token"]
new_token = oauth.refresh_token(f"{base}/auth/access_token", refresh_token=first_refresh)
refreshed = new_token["refresh_token"] != first_refresh and oauth.get(f"{base}/data/io.cozy.notes/_all_docs").status_code == 200

reuse = http.post(
    f"{base}/auth/access_token",
    data={"grant_type": "refresh_token", "refresh_token": first_refresh},
    auth=(client["client_id"], client["client_secret"]),
)
print(
    json.dumps(
        {
            "created_status": created.status_code,
            "refreshed": refreshed,
            "reuse_error": reuse.json().get("error"),
        }
    )
)
