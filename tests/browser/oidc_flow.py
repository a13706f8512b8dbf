"""Sign-in through the institution's identity provider in a real browser (headless Chromium
through Selenium), against a real OpenID provider: the instance's login page sends to the
provider, a wrong then a right password there, back signed in on the instance; the login
domain creates a new person's instance on their first sign-in; a person signed in at the
provider is refused on someone else's instance.

Usage: oidc_flow.py PROVIDER_ISSUER ALICE_ORIGIN LOGIN_ORIGIN BOB_ORIGIN
Prints one JSON line with what it saw; exits non-zero on anything unexpected.
"""

import json
import sys

from selenium.webdriver.common.by import By

import pages

issuer, alice, login_domain, bob = sys.argv[1:5]


def at_provider_sign_in(driver, user, password):
    pages.wait_text(driver, "School sign-in", f"the provider's sign-in page, at {driver.current_url}")
    pages.check(driver, driver.current_url.startswith(issuer), f"at the provider, at {driver.current_url}")
    form = driver.find_element(By.TAG_NAME, "form")
    form.find_element(By.NAME, "username").send_keys(user)
    form.find_element(By.NAME, "password").send_keys(password)
    pages.click_and_wait(driver, form.find_element(By.CSS_SELECTOR, 'button[type="submit"]'))


def signed_in_on(driver, origin, what):
    driver.get(origin + "/")
    pages.wait_text(driver, "You are signed in", what)


seen = {}
first = pages.start()
second = None
try:
    # Alice's instance signs in through the provider only: its login page sends there.
    first.get(alice + "/auth/login")
    pages.wait_text(first, "School sign-in", f"sent to the provider, at {first.current_url}")
    seen["sent_to_provider"] = True
    at_provider_sign_in(first, "alice", "not her password")
    pages.check(first, "Invalid username or password" in first.page_source, "the provider's refusal")
    seen["wrong_password_refused"] = True
    at_provider_sign_in(first, "alice", "alice-password")
    pages.check(first, not first.current_url.startswith(issuer), f"back from the provider, at {first.current_url}")
    cookie = first.get_cookie("cozysessid")
    pages.check(first, cookie and cookie["httpOnly"], f"alice's session cookie {cookie}")
    signed_in_on(first, alice, "alice signed in")
    seen["alice_signed_in"] = True

    # Bob has no instance yet: the login domain creates it on his first sign-in.
    first.get(bob + "/")
    pages.check(first, "no instance is served" in first.page_source, "no instance for bob yet")
    seen["bob_unknown_before"] = True
    second = pages.start()
    second.get(login_domain + "/oidc/start")
    at_provider_sign_in(second, "bob", "bob-password")
    signed_in_on(second, bob, "bob signed in on his new instance")
    seen["bob_created_and_signed_in"] = True

    # Alice, still signed in at the provider, is not let into Bob's instance.
    first.get(bob + "/oidc/start")
    pages.wait_text(first, "Sign-in failed", f"alice refused on bob's instance, at {first.current_url}")
    pages.check(first, "not of bob.localhost" in first.page_source, "the refusal says why")
    pages.check(first, first.get_cookie("cozysessid") is None, "no session for alice on bob's host")
    seen["alice_refused_on_bob"] = True
finally:
    first.quit()
    if second:
        second.quit()
print(json.dumps(seen))
