"""Cocon's own apps checked for accessibility in a real browser (headless Chromium through
Selenium) with axe-core, the engine browsers' accessibility audits use:

  a11y.py INSTANCE_URL PASSPHRASE AXE_JS SCREENSHOTS_DIR APP_URL...

signs in, opens each app, waits until it is ready, runs axe-core's WCAG 2 A and AA rules on the
page as the person sees it (and on the drive's dialogs and the settings' two-factor form once
open), checks on a phone's screen (390 x 844) that no app runs off the side (and saves a
screenshot of each), and prints one JSON line: for each page, how many rules it passes, the
rules it breaks with their impact and the elements concerned, and each app's overflow.
"""

import json
import sys

from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

import pages

instance_url, passphrase, axe_path, shots = sys.argv[1:5]
app_urls = sys.argv[5:]
axe = open(axe_path, encoding="utf-8").read()
driver = pages.start()
driver.set_window_size(1280, 900)
seen = {}


def ready(what):
    pages.wait_ready(driver, what)


def audit(name):
    # Injected through the driver (not the page), so the app's Content-Security-Policy, which
    # allows only its own scripts, does not stand in the way of the audit.
    driver.execute_script(axe)
    result = driver.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']}})
          .then(r => done({passed: r.passes.length,
                           violations: r.violations.map(v => ({id: v.id, impact: v.impact,
                                                               nodes: v.nodes.map(n => n.target.join(' ')).slice(0, 5)}))}))
          .catch(e => done({passed: 0, violations: [{id: 'axe-failed', impact: 'critical', nodes: [String(e)]}]}));
        """
    )
    seen[name] = result


try:
    driver.set_script_timeout(60)
    driver.get(instance_url + "/auth/login")
    pages.submit_form(driver, "/auth/login", {"password": passphrase})
    audit("account")
    for url in app_urls:
        driver.get(url)
        ready(url)
        name = url.split("//", 1)[1].split(".", 1)[0]
        audit(name)
        # Responsive: on a phone's screen nothing runs off the side.
        driver.set_window_size(390, 844)
        ready(url)
        seen[f"{name}-overflow"] = driver.execute_script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        driver.save_screenshot(f"{shots}/{name}-phone.png")
        driver.set_window_size(1280, 900)
        if name == "drive":
            driver.find_element(By.ID, "new-folder").click()
            WebDriverWait(driver, 10).until(lambda d: d.find_element(By.ID, "dialog").get_attribute("open") is not None)
            audit("drive-dialog")
        if name == "settings":
            driver.find_element(By.ID, "twofactor-setup").click()
            WebDriverWait(driver, 10).until(lambda d: d.find_element(By.ID, "twofactor-secret").text)
            audit("settings-twofactor")
finally:
    driver.quit()
print(json.dumps(seen))
