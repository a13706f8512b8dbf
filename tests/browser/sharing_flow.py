"""A sharing accepted in a real browser (headless Chromium through Selenium), as a recipient the
owner does not know takes it from the mailed link:

  sharing_flow.py LINK BOB_ORIGIN PASSPHRASE [DESCRIPTION]

opens the discovery page on the owner's host, gives Bob's Cozy's address, signs in on Bob's host
(the consent page asks for his session), accepts, and lands on Bob's home with the sharing.
Prints one JSON line with what it saw; exits non-zero on anything unexpected.
"""

import json
import sys

from selenium.webdriver.common.by import By

import pages

link, bob_origin, passphrase = sys.argv[1], sys.argv[2], sys.argv[3]
description = sys.argv[4] if len(sys.argv) > 4 else "Holiday plans"
sharing_id = link.split("/sharings/")[1].split("/")[0]
driver = pages.start()
seen = {}
try:
    driver.get(link)
    pages.wait_text(driver, "shares something with you", "the discovery page")
    seen["discovery"] = True
    # An e-mail address is not a Cozy's: the page says so and asks again.
    pages.submit_form(driver, f"/sharings/{sharing_id}/discovery", {"url": "bob@example.org"})
    pages.check(driver, "not an e-mail address" in driver.page_source, "the address refused")
    seen["wrong_address_explained"] = True
    pages.submit_form(driver, f"/sharings/{sharing_id}/discovery", {"url": bob_origin})
    pages.check(driver, driver.current_url.startswith(bob_origin + "/auth/login"), f"at {driver.current_url}")
    seen["sent_to_sign_in"] = True
    pages.submit_form(driver, "/auth/login", {"password": passphrase})
    pages.check(driver, "wants to share with you" in driver.page_source, f"the consent page at {driver.current_url}")
    pages.check(driver, description in driver.page_source, "the consent page names the sharing")
    seen["consent"] = True
    pages.submit_form(driver, "/auth/authorize/sharing", {})
    pages.check(driver, driver.current_url == f"{bob_origin}/?sharing={sharing_id}", f"at {driver.current_url}")
    seen["accepted"] = True
finally:
    driver.quit()
print(json.dumps(seen))
