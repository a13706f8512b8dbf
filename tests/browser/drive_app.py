"""Cocon's drive app in a real browser (headless Chromium through Selenium):

  drive_app.py DRIVE_URL PASSPHRASE FIXTURES_DIR SCREENSHOTS_DIR MANY_ID MANY_LAST

signs in, uploads files (one large enough to go over TUS) and a folder while watching
their progress bars, sees a photo's thumbnail in the grid, renames a file, moves it into the
folder, trashes it and restores it from the trash, creates a share link and opens it in a fresh
browser profile, where the shared photo downloads, and a link with a password, which opens once
its password is given. FIXTURES_DIR holds photo.png, notes.txt,
big.bin and the folder album/; MANY_ID is a folder of more entries than a page, MANY_LAST the
name of its last one. Saves screenshots; prints one JSON line of what the browser saw;
exits non-zero on anything unexpected.
"""

import json
import os
import sys

from selenium.common.exceptions import StaleElementReferenceException, TimeoutException, WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

import pages

drive_url, passphrase, fixtures, shots, many_id, many_last = sys.argv[1:7]
driver = pages.start()
driver.set_window_size(1280, 860)
seen = {}


def log(d):
    return "\n".join(e["message"] for e in d.get_log("browser"))


def wait(d, condition, what, seconds=30):
    try:
        return WebDriverWait(d, seconds, ignored_exceptions=(StaleElementReferenceException,)).until(condition)
    except TimeoutException:
        pages.check(d, False, f"{what}, with the browser's log:\n{log(d)}")


def ready(d):
    """Waits for the drive to have listed its folder whole."""
    wait(
        d,
        lambda d: d.execute_script(
            "const a = document.getElementById('app'); return a.dataset.ready === 'true' && a.dataset.loaded === 'true'"
        ),
        "the drive's listing",
    )


def row_xpath(name):
    return f"//ul[@id='canvas']/li[.//button[@class='name' and text()='{name}']]"


def rows(d):
    return [b.text for b in d.find_elements(By.CSS_SELECTOR, "#canvas li .name")]


def wait_row(d, name, present=True):
    wait(d, lambda d: bool(d.find_elements(By.XPATH, row_xpath(name))) == present, f"{name} {'shown' if present else 'gone'}")


def select(name):
    wait_row(driver, name)

    def click(d):
        d.find_element(By.XPATH, row_xpath(name)).find_element(By.CSS_SELECTOR, "input[type=checkbox]").click()
        return True

    wait(driver, click, f"selecting {name}")


def act(what):
    driver.find_element(By.CSS_SELECTOR, f"#selection button[data-act={what}]").click()


def dialog_open():
    wait(driver, lambda d: d.find_element(By.ID, "dialog").get_attribute("open") is not None, "the dialog")


def open_row(d, name):
    wait_row(d, name)

    def click(d):
        d.find_element(By.XPATH, row_xpath(name)).find_element(By.CSS_SELECTOR, ".name").click()
        return True

    wait(d, click, f"opening {name}")
    ready(d)


def uploads_done(count):
    """Waits for `count` uploads to be over; answers each one's status."""
    wait(
        driver,
        lambda d: len(d.find_elements(By.CSS_SELECTOR, "#upload-list li[data-done]")) >= count,
        f"{count} uploads over",
        seconds=180,
    )
    return [li.text.splitlines()[-1] for li in driver.find_elements(By.CSS_SELECTOR, "#upload-list li")]


try:
    driver.get(drive_url)
    pages.check(driver, "/auth/login" in driver.current_url, f"sent to sign in, at {driver.current_url}")
    pages.submit_form(driver, "/auth/login", {"password": passphrase})
    pages.check(driver, driver.current_url.startswith(drive_url), f"back in the drive, at {driver.current_url}")
    ready(driver)
    seen["signed_in"] = True
    seen["first_text"] = driver.find_element(By.ID, "status").text

    # Every value a progress bar takes between 0 and 100, as the person would see it move.
    driver.execute_script(
        """window.__steps = new Set()
        const list = document.getElementById('upload-list')
        new MutationObserver(() => {
          for (const p of list.querySelectorAll('progress')) if (p.value > 0 && p.value < 100) window.__steps.add(p.value)
        }).observe(list, {subtree: true, childList: true, attributes: true, characterData: true})"""
    )
    files = [os.path.join(fixtures, n) for n in ["photo.png", "notes.txt", "big.bin"]]
    driver.find_element(By.ID, "upload-files").send_keys("\n".join(files))
    seen["file_uploads"] = uploads_done(3)
    driver.find_element(By.ID, "upload-folder").send_keys(os.path.join(fixtures, "album"))
    seen["all_uploads"] = uploads_done(5)
    seen["progress_steps"] = driver.execute_script("return window.__steps.size")
    driver.find_element(By.ID, "uploads-close").click()
    for name in ["album", "big.bin", "notes.txt", "photo.png"]:
        wait_row(driver, name)
    ready(driver)
    seen["listing"] = rows(driver)
    seen["count_text"] = driver.find_element(By.ID, "status").text
    driver.save_screenshot(f"{shots}/drive.png")

    # The photo grid shows the thumbnail the files service makes after the upload.
    driver.find_element(By.ID, "view").click()
    thumb = row_xpath("photo.png") + "//img[contains(@src, '/thumbnails/')]"

    def thumbnail_shown(d):
        found = d.find_elements(By.XPATH, thumb)
        if found and d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", found[0]):
            return True
        d.refresh()  # the listing carries the thumbnail's link once it is made
        ready(d)
        return False

    wait(driver, thumbnail_shown, "the photo's thumbnail", seconds=60)
    seen["thumbnail"] = True
    driver.save_screenshot(f"{shots}/drive-grid.png")
    driver.find_element(By.ID, "view").click()

    # Rename, then move into the folder.
    select("notes.txt")
    act("rename")
    dialog_open()
    box = driver.find_element(By.ID, "field-name")
    box.clear()
    box.send_keys("journal.txt")
    driver.find_element(By.ID, "dialog-ok").click()
    wait_row(driver, "journal.txt")
    wait_row(driver, "notes.txt", present=False)
    seen["renamed"] = True

    select("journal.txt")
    act("move")
    wait(driver, lambda d: d.find_elements(By.XPATH, "//div[@id='dialog-body']//li/button[text()='album']"), "the folder picker")
    driver.find_element(By.XPATH, "//div[@id='dialog-body']//li/button[text()='album']").click()
    wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, "#dialog-body p.link").text == "/album", "the picker in album")
    driver.find_element(By.ID, "dialog-ok").click()
    wait_row(driver, "journal.txt", present=False)
    open_row(driver, "album")
    wait_row(driver, "journal.txt")
    wait_row(driver, "sub")
    seen["moved"] = rows(driver)
    seen["crumbs"] = driver.find_element(By.ID, "crumbs").text

    # To the trash and back.
    select("journal.txt")
    act("trash")
    wait_row(driver, "journal.txt", present=False)
    driver.find_element(By.ID, "to-trash").click()
    ready(driver)
    wait_row(driver, "journal.txt")
    seen["in_trash"] = rows(driver)
    select("journal.txt")
    act("restore")
    wait_row(driver, "journal.txt", present=False)
    driver.back()  # back to album, as the browser's history has it
    ready(driver)
    wait_row(driver, "journal.txt")
    seen["restored"] = True

    # A folder of many entries: listed whole behind its first screen, drawn as it scrolls.
    driver.get(f"{drive_url}#/folder/{many_id}")
    wait_row(driver, "file-0000.txt")
    ready(driver)
    wait(driver, lambda d: d.find_element(By.ID, "status").text.split()[0].isdigit(), "the count")
    seen["many"] = {
        "status": driver.find_element(By.ID, "status").text,
        "first": rows(driver)[0],
        "rows_in_page": len(driver.find_elements(By.CSS_SELECTOR, "#canvas li")),
    }
    driver.execute_script("const s = document.getElementById('scroller'); s.scrollTop = s.scrollHeight")
    wait_row(driver, many_last)
    seen["many"]["last_shown"] = True

    # A link to the photo, opened by someone else.
    driver.find_element(By.ID, "to-files").click()
    ready(driver)
    select("photo.png")
    act("share")
    dialog_open()
    driver.find_element(By.ID, "dialog-ok").click()
    wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#links a"), "the new link")
    link = driver.find_element(By.CSS_SELECTOR, "#links a").get_attribute("href")
    seen["link"] = link
    # A second link, with a password.
    driver.find_element(By.ID, "field-password").send_keys("open sesame")
    driver.find_element(By.ID, "dialog-ok").click()
    wait(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#links a")) == 2, "the protected link")
    protected = [li for li in driver.find_elements(By.CSS_SELECTOR, "#links li") if "(password)" in li.text]
    pages.check(driver, len(protected) == 1, "one link says it has a password")
    seen["protected_link"] = protected[0].find_element(By.TAG_NAME, "a").get_attribute("href")
    driver.save_screenshot(f"{shots}/drive-share.png")
    driver.find_element(By.ID, "dialog-cancel").click()
finally:
    driver.quit()

other = pages.start()
other.set_window_size(1280, 860)
try:
    other.get(seen["link"])
    ready(other)
    seen["public"] = {
        "rows": rows(other),
        "title": other.find_element(By.ID, "title").text,
        "places_hidden": not other.find_element(By.ID, "places").is_displayed(),
        "upload_hidden": not other.find_element(By.ID, "upload-files-label").is_displayed(),
        "download_shown": other.find_element(By.ID, "download-all").is_displayed(),
    }
    # Its download, as the page's own code gets it: the photo's bytes.
    other.set_script_timeout(30)
    seen["public"]["download_bytes"] = other.execute_async_script(
        """const done = arguments[arguments.length - 1]
        link(state.entries[0].id, '').then(h => fetch(h)).then(r => r.arrayBuffer()).then(b => done(b.byteLength), e => done(String(e)))"""
    )
    other.save_screenshot(f"{shots}/drive-public.png")

    # The protected link asks for its password, says when it is wrong, opens with the right one.
    other.get(seen["protected_link"])
    wait(other, lambda d: d.find_elements(By.ID, "field-password"), "the link's password form")
    other.find_element(By.ID, "field-password").send_keys("not it")
    pages.click_and_wait(other, other.find_element(By.CSS_SELECTOR, "form.unlock button"))
    wait(other, lambda d: d.find_elements(By.CSS_SELECTOR, "form.unlock .problem"), "the wrong password told")
    told = other.find_element(By.CSS_SELECTOR, "form.unlock .problem").text
    other.find_element(By.ID, "field-password").send_keys("open sesame")
    pages.click_and_wait(other, other.find_element(By.CSS_SELECTOR, "form.unlock button"))
    ready(other)
    seen["protected"] = {"wrong_told": told, "rows": rows(other), "url": other.current_url}
except WebDriverException as e:
    pages.check(other, False, f"the public link: {e}\n{log(other)}")
finally:
    other.quit()
print(json.dumps(seen))
