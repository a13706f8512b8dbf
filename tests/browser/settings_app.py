"""Cocon's settings app in a real browser (headless Chromium through Selenium):

  settings_app.py SETTINGS_URL HOME_URL PASSPHRASE NEW_PASSPHRASE SCREENSHOTS_DIR

signs in, signs out the other device, disconnects the connected app, changes the name, changes
the passphrase (first with two different new ones, which it refuses), sets up two-factor (scans
the key, is refused with the old passphrase, then turns it on and reads the recovery codes),
stops one kind of notification coming by e-mail, and sees the new name on the home app. Saves a screenshot; prints one JSON line of what the browser saw; exits non-zero on
anything unexpected.
"""

import json
import sys
import time

from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

import pages

settings_url, home_url, passphrase, new_passphrase, shots = sys.argv[1:6]
driver = pages.start()
driver.set_window_size(1280, 1600)
seen = {}


def wait(condition, what, seconds=30):
    try:
        return WebDriverWait(driver, seconds, ignored_exceptions=(StaleElementReferenceException,)).until(condition)
    except TimeoutException:
        logs = "\n".join(e["message"] for e in driver.get_log("browser"))
        pages.check(driver, False, f"{what}, with the browser's log:\n{logs}")


def items(list_id):
    return driver.find_elements(By.CSS_SELECTOR, f"#{list_id} li[data-id]")


def said(box_id, what):
    wait(lambda d: d.find_element(By.ID, box_id).text, what)
    return driver.find_element(By.ID, box_id).text


try:
    driver.get(settings_url)
    pages.check(driver, "/auth/login" in driver.current_url, f"sent to sign in, at {driver.current_url}")
    pages.submit_form(driver, "/auth/login", {"password": passphrase})
    wait(lambda d: d.execute_script("return document.getElementById('app').dataset.ready === 'true'"), "the settings")
    seen["problem_shown"] = driver.find_element(By.ID, "problem").is_displayed()

    # Two devices: this browser and the test's client. Sign the other out.
    seen["sessions_before"] = len(items("sessions"))
    seen["this_device"] = [li.text for li in items("sessions") if "this device" in li.text]
    other = [li for li in items("sessions") if "this device" not in li.text]
    pages.check(driver, len(other) == 1, "one other device")
    other[0].find_element(By.TAG_NAME, "button").click()
    wait(lambda d: len(items("sessions")) == 1, "the other device signed out")
    seen["sessions_after"] = len(items("sessions"))

    # The connected app, disconnected.
    seen["clients_before"] = [li.text.splitlines()[0] for li in items("clients")]
    items("clients")[0].find_element(By.TAG_NAME, "button").click()
    wait(lambda d: not items("clients"), "the app disconnected")
    seen["clients_after"] = driver.find_element(By.ID, "clients").text

    # The name.
    name = driver.find_element(By.ID, "public-name")
    name.clear()
    name.send_keys("Alice Martin")
    driver.find_element(By.ID, "profile-save").click()
    seen["profile_said"] = said("profile-said", "the profile saved")

    # The passphrase: two different new ones are refused here; then changed.
    driver.find_element(By.ID, "current").send_keys(passphrase)
    driver.find_element(By.ID, "new").send_keys(new_passphrase)
    driver.find_element(By.ID, "again").send_keys(new_passphrase + "x")
    driver.find_element(By.ID, "passphrase-save").click()
    seen["mismatch_said"] = said("passphrase-said", "the mismatch told")
    again = driver.find_element(By.ID, "again")
    again.clear()
    again.send_keys(new_passphrase)
    driver.find_element(By.ID, "passphrase-save").click()
    wait(lambda d: "changed" in d.find_element(By.ID, "passphrase-said").text, "the passphrase changed")
    seen["passphrase_said"] = driver.find_element(By.ID, "passphrase-said").text
    seen["storage"] = driver.find_element(By.ID, "storage-text").text

    # Two-factor: the key to scan, a code from it; the old passphrase is refused, the new one
    # turns it on and the recovery codes are shown.
    seen["twofactor_before"] = driver.find_element(By.ID, "twofactor-text").text
    driver.find_element(By.ID, "twofactor-setup").click()
    wait(lambda d: d.find_element(By.ID, "twofactor-secret").text, "the key to scan")
    secret = driver.find_element(By.ID, "twofactor-secret").text
    wait(
        lambda d: d.execute_script("const i = document.getElementById('twofactor-qr'); return i.complete && i.naturalWidth > 0"),
        "the QR code drawn",
    )
    driver.find_element(By.ID, "twofactor-code").send_keys(pages.totp(secret, time.time()))
    driver.find_element(By.ID, "twofactor-passphrase").send_keys(passphrase)
    driver.find_element(By.ID, "twofactor-enable").click()
    seen["twofactor_refused"] = said("twofactor-said", "the old passphrase refused")
    typed = driver.find_element(By.ID, "twofactor-passphrase")
    typed.clear()
    typed.send_keys(new_passphrase)
    driver.find_element(By.ID, "twofactor-enable").click()
    wait(lambda d: d.find_elements(By.CSS_SELECTOR, "#recovery-codes li"), "the recovery codes")
    seen["recovery_codes"] = [li.text for li in driver.find_elements(By.CSS_SELECTOR, "#recovery-codes li")]
    seen["twofactor_after"] = driver.find_element(By.ID, "twofactor-text").text
    seen["twofactor_said"] = driver.find_element(By.ID, "twofactor-said").text

    # Notifications by e-mail: the full storage's no longer comes by mail.
    boxes = driver.find_elements(By.CSS_SELECTOR, "#mail-categories input[data-category]")
    seen["categories"] = {b.get_attribute("data-category"): b.is_selected() for b in boxes}
    driver.find_element(By.CSS_SELECTOR, "#mail-categories input[data-category=disk-quota]").click()
    driver.find_element(By.ID, "mail-save").click()
    seen["mail_said"] = said("mail-said", "the preferences saved")
    driver.save_screenshot(f"{shots}/settings.png")

    # The home app greets the person by the new name (this session lives on).
    driver.get(home_url)
    wait(lambda d: d.execute_script("return document.querySelector('[role=application]').dataset.ready === 'true'"), "home")
    seen["greeting"] = driver.find_element(By.ID, "greeting").text
finally:
    driver.quit()
print(json.dumps(seen))
