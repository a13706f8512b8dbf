"""A context's look in a real browser (headless Chromium through Selenium): the colour links take
and the logo drawn before the page's content, on a sign-in page of the school's instance and of
an instance of no context.

Usage: theme_check.py SCHOOL_LOGIN_URL DEFAULT_LOGIN_URL
Prints one JSON line with the computed styles it saw.
"""

import json
import sys

import pages

school, default = sys.argv[1:3]
link_colour = "return getComputedStyle(document.querySelector('main a')).color"
logo = "return getComputedStyle(document.querySelector('main'), '::before').content"
seen = {}
driver = pages.start()
try:
    driver.get(school)
    pages.wait_text(driver, "Sign in", "the school's sign-in page")
    seen["school_link"] = driver.execute_script(link_colour)
    seen["school_logo"] = driver.execute_script(logo)
    driver.get(default)
    pages.wait_text(driver, "Sign in", "the other sign-in page")
    seen["default_link"] = driver.execute_script(link_colour)
finally:
    driver.quit()
print(json.dumps(seen))
