"""What the browser scripts share: a headless Chromium driven through Selenium, and the steps
they take on Cocon's pages (check, click and wait for the next page, fill and submit a form)."""

import base64
import hashlib
import hmac
import struct
import sys

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException, WebDriverException
from selenium.webdriver.support.ui import WebDriverWait


def start():
    options = webdriver.ChromeOptions()
    for flag in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    driver.set_page_load_timeout(30)
    return driver


def check(driver, condition, what):
    if not condition:
        # The page's text first (what a person reads, whole), then the start of its markup.
        try:
            text = driver.execute_script("return document.body ? document.body.innerText : ''")
        except Exception as e:  # the page may be mid-navigation
            text = f"(no text: {e})"
        sys.exit(f"unexpected: {what}\n--- text ---\n{text}\n--- page ---\n{driver.page_source[:2000]}")


def click_and_wait(driver, element):
    # The click returns before the next page loads: mark the old page's window, then wait for a
    # loaded document without the mark. Checking an element for staleness races the navigation
    # (Chromium may answer "node does not belong to the document" mid-swap), so any driver error
    # while the page changes only means "not yet".
    driver.execute_script("window.__coconOldPage = true")
    element.click()
    WebDriverWait(driver, 20, ignored_exceptions=(WebDriverException,)).until(
        lambda d: d.execute_script(
            "return window.__coconOldPage === undefined && document.readyState === 'complete'"
        )
    )


def submit_form(driver, action, fields):
    form = driver.find_element(By.CSS_SELECTOR, f'form[action="{action}"]')
    for name, value in fields.items():
        box = form.find_element(By.NAME, name)
        box.clear()
        box.send_keys(value)
    click_and_wait(driver, form.find_element(By.CSS_SELECTOR, 'button[type="submit"]'))


def totp(secret_b32, at):
    """The authenticator app's code (RFC 6238: SHA-1, 6 digits, 30 s) for `secret_b32` at `at`."""
    key = base64.b32decode(secret_b32 + "=" * (-len(secret_b32) % 8))
    digest = hmac.new(key, struct.pack(">Q", int(at) // 30), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    code = (struct.unpack(">I", digest[offset : offset + 4])[0] & 0x7FFFFFFF) % 1_000_000
    return f"{code:06d}"


def wait_text(driver, text, what, seconds=15):
    """Waits until the page holds `text`: a navigation can return before the document it leads
    to is the one the driver reads."""
    try:
        WebDriverWait(driver, seconds, ignored_exceptions=(WebDriverException,)).until(
            lambda d: text in d.page_source
        )
    except TimeoutException:
        check(driver, False, what)


def wait_ready(driver, what):
    """Waits until the page's app says it is ready (`data-ready` on `[role=application]`)."""
    try:
        WebDriverWait(driver, 30, ignored_exceptions=(StaleElementReferenceException,)).until(
            lambda d: d.execute_script(
                "const a = document.querySelector('[role=application]'); return a && a.dataset.ready === 'true'"
            )
        )
    except TimeoutException:
        logs = "\n".join(e["message"] for e in driver.get_log("browser"))
        check(driver, False, f"{what} ready, with the browser's log:\n{logs}")
