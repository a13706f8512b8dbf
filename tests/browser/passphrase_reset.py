"""A forgotten passphrase in a real browser (headless Chromium through Selenium), in two steps
around the mail the test reads from its SMTP server:

  passphrase_reset.py request ORIGIN   from the login page, "Forgot your passphrase?", then ask
                                       for the link;
  passphrase_reset.py renew LINK NEW   open the mailed link, choose NEW, land on the login page,
                                       sign in with NEW (and land on the home app).

Prints one JSON line with what it saw; exits non-zero on anything unexpected.
"""

import json
import sys

from selenium.webdriver.common.by import By

import pages


def check(condition, what):
    pages.check(driver, condition, what)


def click_and_wait(element):
    pages.click_and_wait(driver, element)


def submit_form(action, fields):
    pages.submit_form(driver, action, fields)


driver = pages.start()
seen = {}
try:
    if sys.argv[1] == "request":
        driver.get(sys.argv[2] + "/auth/login")
        click_and_wait(driver.find_element(By.LINK_TEXT, "Forgot your passphrase?"))
        check(driver.current_url.endswith("/auth/passphrase_reset"), f"at {driver.current_url}")
        submit_form("/auth/passphrase_reset", {})
        check("Check your mail" in driver.page_source, "the page after asking")
        seen["requested"] = True
    else:
        link, new = sys.argv[2], sys.argv[3]
        driver.get(link)
        submit_form("/auth/passphrase_renew", {"password": new, "password2": new})
        check(driver.current_url.endswith("/auth/login"), f"after the new passphrase at {driver.current_url}")
        seen["renewed"] = True
        submit_form("/auth/login", {"password": new})
        origin = link.split("/auth/")[0]
        home_app = origin.replace("://", "://home.", 1) + "/"
        check(driver.current_url == home_app, f"the home app after signing in, at {driver.current_url}")
        driver.get(origin + "/")
        check("You are signed in" in driver.page_source, "the account page after signing in with the new passphrase")
        seen["signed_in"] = True
finally:
    driver.quit()
print(json.dumps(seen))
