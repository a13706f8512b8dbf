"""Cocon's apps on flat sub-domains in a real browser (headless Chromium through Selenium):

  flat_apps.py DRIVE_URL PASSPHRASE SCREENSHOTS_DIR

opens the drive app on its flat host (alice-drive.cozy.localhost), signs in on the instance's login
page it is sent to, comes back to the drive with the session (a one-time code traded for the
app host's own cookie), then follows the drive's link to the home app on another flat host,
which gets the session the same way without asking again. Saves a screenshot; prints one JSON
line of what the browser saw; exits non-zero on anything unexpected.
"""

import json
import sys

from selenium.webdriver.common.by import By

import pages

drive_url, passphrase, shots = sys.argv[1:4]
driver = pages.start()
seen = {}


def ready(what):
    pages.wait_ready(driver, what)


try:
    driver.get(drive_url)
    seen["sent_to"] = driver.current_url
    pages.check(driver, "/auth/login" in driver.current_url, f"sent to sign in, at {driver.current_url}")
    pages.submit_form(driver, "/auth/login", {"password": passphrase})
    ready("the drive")
    seen["drive_at"] = driver.current_url
    seen["drive_cookies"] = [c.get("domain") for c in driver.get_cookies() if c["name"] == "cozysessid"]
    seen["drive_problem"] = driver.find_element(By.ID, "problem").is_displayed()
    driver.save_screenshot(f"{shots}/drive-flat.png")

    home = driver.find_element(By.ID, "to-home")
    seen["home_link"] = home.get_attribute("href")
    pages.click_and_wait(driver, home)
    ready("the home app")
    seen["home_at"] = driver.current_url
    seen["tiles"] = [a.get_attribute("href") for a in driver.find_elements(By.CSS_SELECTOR, "#apps li[data-slug] a")]
    seen["home_problem"] = driver.find_element(By.ID, "problem").is_displayed()
    seen["log"] = [e["message"] for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
finally:
    driver.quit()
print(json.dumps(seen))
