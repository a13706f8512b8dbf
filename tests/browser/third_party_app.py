"""A web app built for cozy-stack, run in a real browser (headless Chromium through Selenium)
against Cocon:

  third_party_app.py APP_URL HOME_URL PASSPHRASE SCREENSHOTS_DIR

opens the app on its sub-domain, is sent to the instance's login page, signs in, comes back to
the app, and waits for the app (cozy-client from npm, reading the token Cocon wrote into its
page) to write what it did into #result. Then opens Cocon's own home app and reads what it
shows. Saves a screenshot of each app. Prints one JSON line: the app's result and what the
browser saw; exits non-zero on anything unexpected.
"""

import json
import sys

from selenium.common.exceptions import TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

import pages

app_url, home_url, passphrase, shots = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
driver = pages.start()
seen = {}


def wait_for(by, what, attribute, description):
    """Waits for an app to mark an element as done; fails with the browser's log otherwise."""
    try:
        WebDriverWait(driver, 30).until(lambda d: d.find_element(by, what).get_attribute(attribute) == "true")
    except TimeoutException:
        logs = "\n".join(e["message"] for e in driver.get_log("browser"))
        pages.check(driver, False, f"{description}, with the browser's log:\n{logs}")


try:
    driver.get(app_url)
    pages.check(driver, "/auth/login" in driver.current_url, f"sent to sign in, at {driver.current_url}")
    seen["sent_to_sign_in"] = True
    pages.submit_form(driver, "/auth/login", {"password": passphrase})
    pages.check(driver, driver.current_url.startswith(app_url), f"back in the app, at {driver.current_url}")
    seen["back_in_the_app"] = True
    wait_for(By.ID, "result", "data-done", "the app's result")
    seen["result"] = json.loads(driver.find_element(By.ID, "result").text)
    # The session cookie the app's requests carried: set for the instance's domain.
    seen["cookie_domains"] = [c["domain"] for c in driver.get_cookies() if c["name"] == "cozysessid"]
    driver.save_screenshot(f"{shots}/probe.png")

    # Cocon's home: the apps as tiles (each its sub-domain), the storage, a greeting.
    driver.get(home_url)
    wait_for(By.CSS_SELECTOR, "[role=application]", "data-ready", "the home app")
    tiles = driver.find_elements(By.CSS_SELECTOR, "#apps li[data-slug] a")
    seen["home"] = {
        "tiles": {t.find_element(By.XPATH, "..").get_attribute("data-slug"): t.get_attribute("href") for t in tiles},
        "greeting": driver.find_element(By.ID, "greeting").text,
        "storage": driver.find_element(By.ID, "storage-text").text,
        "problem": driver.find_element(By.ID, "problem").is_displayed(),
        "log": [e["message"] for e in driver.get_log("browser") if e.get("level") == "SEVERE"],
    }
    driver.save_screenshot(f"{shots}/home.png")
finally:
    driver.quit()
print(json.dumps(seen))
