"""A web app built for cozy-stack, run in a real browser (headless Chromium through Selenium)
against Cocon:

  third_party_app.py APP_URL PASSPHRASE

opens the app on its sub-domain, is sent to the instance's login page, signs in, comes back to
the app, and waits for the app (cozy-client from npm, reading the token Cocon wrote into its
page) to write what it did into #result. Prints one JSON line: the app's result and what the
browser saw; exits non-zero on anything unexpected.
"""

import json
import sys

from selenium.common.exceptions import TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

import pages

app_url, passphrase = sys.argv[1], sys.argv[2]
driver = pages.start()
seen = {}
try:
    driver.get(app_url)
    pages.check(driver, "/auth/login" in driver.current_url, f"sent to sign in, at {driver.current_url}")
    seen["sent_to_sign_in"] = True
    pages.submit_form(driver, "/auth/login", {"password": passphrase})
    pages.check(driver, driver.current_url.startswith(app_url), f"back in the app, at {driver.current_url}")
    seen["back_in_the_app"] = True
    try:
        WebDriverWait(driver, 30).until(
            lambda d: d.find_element(By.ID, "result").get_attribute("data-done") == "true"
        )
    except TimeoutException:
        logs = "\n".join(e["message"] for e in driver.get_log("browser"))
        pages.check(driver, False, f"the app's result, with the browser's log:\n{logs}")
    seen["result"] = json.loads(driver.find_element(By.ID, "result").text)
    # The session cookie the app's requests carried: set for the instance's domain.
    seen["cookie_domains"] = [c["domain"] for c in driver.get_cookies() if c["name"] == "cozysessid"]
    seen["console_errors"] = [
        e["message"] for e in driver.get_log("browser") if e.get("level") == "SEVERE"
    ]
finally:
    driver.quit()
print(json.dumps(seen))
