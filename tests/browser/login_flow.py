"""The person's pages in a real browser (headless Chromium through Selenium): onboarding,
sign-out, a wrong then a right passphrase, two-factor set-up from the QR page, and a login in
two steps. Chromium resolves *.localhost to this machine, so the instance's domain is the host.

Usage: login_flow.py ONBOARDING_URL
Prints one JSON line with what it saw; exits non-zero on anything unexpected.
"""

import json
import sys
import time

from selenium.webdriver.common.by import By

import pages

onboarding_url = sys.argv[1]
origin = onboarding_url.split("/auth/")[0]
home_app = origin.replace("://", "://home.", 1) + "/"
passphrase = "correct horse battery staple"


def check(condition, what):
    pages.check(driver, condition, what)


def click_and_wait(element):
    pages.click_and_wait(driver, element)


def submit_form(action, fields):
    pages.submit_form(driver, action, fields)


driver = pages.start()
seen = {}
try:
    driver.get(onboarding_url)
    submit_form("/auth/onboarding", {"password": passphrase, "password2": passphrase})
    check("You are signed in" in driver.page_source, "home after onboarding")
    cookie = driver.get_cookie("cozysessid")
    check(cookie and cookie["httpOnly"] and cookie.get("sameSite") == "Lax", f"session cookie {cookie}")
    seen["onboarded"] = True

    # Sign out, then a wrong and a right passphrase.
    forms = driver.find_elements(By.CSS_SELECTOR, 'form[action="/auth/logout"]')
    click_and_wait([f for f in forms if not f.find_elements(By.NAME, "others")][0].find_element(By.TAG_NAME, "button"))
    check(driver.current_url.endswith("/auth/login"), f"after sign-out at {driver.current_url}")
    submit_form("/auth/login", {"password": "not my passphrase"})
    alert = driver.find_element(By.CSS_SELECTOR, '[role="alert"]').text
    check("wrong passphrase" in alert, f"alert {alert!r}")
    submit_form("/auth/login", {"password": passphrase})
    # Signed in, the person lands on the home app, as on cozy-stack; the account page is at /.
    check(driver.current_url == home_app, f"the home app after login, at {driver.current_url}")
    driver.get(origin + "/")
    check("You are signed in" in driver.page_source, "the account page")
    seen["login"] = True

    # Two-factor from the QR page.
    click_and_wait(driver.find_element(By.CSS_SELECTOR, 'form[action="/auth/twofactor/setup"] button'))
    check(driver.find_elements(By.CSS_SELECTOR, "figure svg"), "a QR code")
    secret = driver.find_element(By.CSS_SELECTOR, "p code").text
    submit_form("/auth/twofactor/enable", {"code": pages.totp(secret, time.time())})
    codes = [li.text for li in driver.find_elements(By.CSS_SELECTOR, "ol li code")]
    check(len(codes) == 10, f"recovery codes {codes}")
    seen["two_factor"] = True

    # A login in two steps: the passphrase, then the next step's code.
    driver.delete_cookie("cozysessid")
    driver.get(origin + "/auth/login")
    submit_form("/auth/login", {"password": passphrase})
    check(driver.find_elements(By.NAME, "two_factor_passcode"), "the code page")
    submit_form("/auth/twofactor", {"two_factor_passcode": pages.totp(secret, time.time() + 30)})
    check(driver.current_url == home_app, f"the home app after two-factor login, at {driver.current_url}")
    driver.get(origin + "/")
    check("10 recovery codes left" in driver.page_source, "the account page after two-factor login")
    seen["two_step_login"] = True
finally:
    driver.quit()
print(json.dumps(seen))
