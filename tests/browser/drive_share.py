"""Sharing a folder with another Cozy from the drive app, in a real browser (headless Chromium
through Selenium):

  drive_share.py DRIVE_URL PASSPHRASE FOLDER EMAIL SCREENSHOTS_DIR

signs in, selects FOLDER, opens "Share with a Cozy", sends an invitation to EMAIL (first
without an address, which the form refuses), and sees the person listed as invited. Saves a
screenshot; prints one JSON line of what the browser saw; exits non-zero on anything unexpected.
"""

import json
import sys

from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

import pages

drive_url, passphrase, folder, email, shots = sys.argv[1:6]
driver = pages.start()
driver.set_window_size(1280, 900)
seen = {}


def wait(condition, what):
    try:
        return WebDriverWait(driver, 30, ignored_exceptions=(StaleElementReferenceException,)).until(condition)
    except TimeoutException:
        logs = "\n".join(e["message"] for e in driver.get_log("browser"))
        pages.check(driver, False, f"{what}, with the browser's log:\n{logs}")


def members():
    return driver.find_elements(By.CSS_SELECTOR, "#members li[data-status]")


try:
    driver.get(drive_url)
    pages.submit_form(driver, "/auth/login", {"password": passphrase})
    pages.wait_ready(driver, "the drive")
    row = f"//ul[@id='canvas']/li[.//button[@class='name' and text()='{folder}']]"
    wait(lambda d: d.find_elements(By.XPATH, row), f"{folder} listed")
    wait(
        lambda d: d.find_element(By.XPATH, row).find_element(By.CSS_SELECTOR, "input[type=checkbox]").click() or True,
        f"selecting {folder}",
    )
    share = driver.find_element(By.CSS_SELECTOR, "#selection button[data-act=sharecozy]")
    seen["button"] = share.text
    share.click()
    wait(lambda d: d.find_element(By.ID, "dialog").get_attribute("open") is not None, "the dialog")
    wait(lambda d: d.find_elements(By.CSS_SELECTOR, "#members li"), "the members listed")
    seen["before"] = driver.find_element(By.ID, "members").text
    # No address: the browser's own check stops the form.
    driver.find_element(By.ID, "dialog-ok").click()
    seen["refused_empty"] = driver.execute_script("return !document.getElementById('field-email').validity.valid")
    driver.find_element(By.ID, "field-email").send_keys(email)
    driver.find_element(By.ID, "dialog-ok").click()
    wait(lambda d: members(), "the person listed")
    seen["members"] = [(li.get_attribute("data-email"), li.get_attribute("data-status"), li.text) for li in members()]
    seen["said"] = driver.find_element(By.CSS_SELECTOR, "#dialog .said").text
    seen["problem"] = driver.find_element(By.ID, "dialog-problem").is_displayed()
    driver.save_screenshot(f"{shots}/drive-share-cozy.png")
finally:
    driver.quit()
print(json.dumps(seen))
