"""The drive app's figures, driven by tests/bench/drive.sh against a release server:

  drive_app.py HTTP_ADDR DOMAIN ONBOARDING_URL TOKEN N UPLOAD_FILE APP_DIR

makes a folder of N empty files through the API (16 at a time), onboards the person in
headless Chromium, then measures the first screen of that folder (from navigation to the
first page of rows drawn, the app's `drive-first-screen` mark; the median of 5 loads), the
bytes of HTML, JavaScript and CSS the page loads (gzip -9, as a compressing proxy sends them),
and UPLOAD_FILE uploaded through the page's file picker (over TUS, in parts) against the same
upload with curl, with the CPU time the server (SERVER_PID) and Chromium's processes spent on
each: on a machine where both share the cores, their sum over the cores bounds the page's rate.
Prints one JSON line.
"""

import concurrent.futures
import gzip
import json
import os
import statistics
import subprocess
import sys
import threading
import time

import requests
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "browser"))
import pages  # noqa: E402

addr, domain, onboarding, token, n, upload_file, app_dir = sys.argv[1:8]
server_pid = int(os.environ["SERVER_PID"])


def cpu_s(pid):
    """User and system CPU seconds of a process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def chromium_cpu_s():
    total = 0.0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/comm") as f:
                if "chrom" in f.read():
                    total += cpu_s(pid)
        except OSError:
            pass  # gone meanwhile
    return total


n = int(n)
port = addr.rsplit(":", 1)[1]
base = f"http://{addr}"
headers = {"Host": domain, "Authorization": f"Bearer {token}"}
ROOT = "io.cozy.files.root-dir"

r = requests.post(f"{base}/files/{ROOT}?Type=directory&Name=many", headers=headers)
r.raise_for_status()
many = r.json()["data"]["id"]
local = threading.local()


def make(i):
    s = getattr(local, "s", None) or requests.Session()
    local.s = s
    s.post(f"{base}/files/{many}?Type=file&Name=file-{i:05d}.txt", headers=headers, data=b"").raise_for_status()


t0 = time.monotonic()
with concurrent.futures.ThreadPoolExecutor(16) as pool:
    list(pool.map(make, range(n)))
made_s = time.monotonic() - t0

driver = pages.start()
driver.set_window_size(1280, 860)
result = {"files": n, "made_per_s": round(n / made_s)}
try:
    driver.get(onboarding)
    passphrase = "a bench passphrase of some length"
    pages.submit_form(driver, "/auth/onboarding", {"password": passphrase, "password2": passphrase})
    drive = f"http://drive.{domain}:{port}/"

    def ready(d):
        return d.execute_script(
            "const a = document.getElementById('app'); return a && a.dataset.ready === 'true' && a.dataset.loaded === 'true'"
        )

    def until_ready():
        try:
            WebDriverWait(driver, 60).until(ready)
        except Exception:
            logs = "\n".join(e["message"] for e in driver.get_log("browser"))
            sys.exit(f"the drive did not list its folder at {driver.current_url}:\n{logs}\n{driver.page_source[:1500]}")

    firsts = []
    for _ in range(6):
        driver.get("about:blank")  # a new document each time, not a move within the page
        driver.get(f"{drive}#/folder/{many}")
        until_ready()
        firsts.append(driver.execute_script("return performance.getEntriesByName('drive-first-screen')[0].startTime"))
    firsts = firsts[1:]  # the first load fills the browser's cache
    result["first_screen_ms_median"] = round(statistics.median(firsts), 1)
    result["first_screen_ms_max"] = round(max(firsts), 1)
    result["rows_in_page"] = driver.execute_script("return document.querySelectorAll('#canvas li').length")

    sizes = {}
    for name in ["index.html", "drive.js", "drive.css"]:
        with open(os.path.join(app_dir, name), "rb") as f:
            raw = f.read()
        sizes[name] = {"raw": len(raw), "gzip": len(gzip.compress(raw, 9))}
    result["page_bytes"] = sizes
    result["page_gzip_total"] = sum(s["gzip"] for s in sizes.values())

    size = os.path.getsize(upload_file)
    driver.get(drive)
    until_ready()
    server0, chromium0, t0 = cpu_s(server_pid), chromium_cpu_s(), time.monotonic()
    driver.find_element(By.ID, "upload-files").send_keys(upload_file)
    WebDriverWait(driver, 1800).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#upload-list li[data-done]"))
    browser_s = time.monotonic() - t0
    result["upload_page_cpu_s"] = {
        "server": round(cpu_s(server_pid) - server0, 2),
        "chromium": round(chromium_cpu_s() - chromium0, 2),
    }
    status = driver.find_element(By.CSS_SELECTOR, "#upload-list li[data-done]").get_attribute("data-done")
    assert status == "true", driver.find_element(By.ID, "upload-list").text
finally:
    driver.quit()

server0, t0 = cpu_s(server_pid), time.monotonic()
subprocess.run(
    ["curl", "-sf", "-o", "/dev/null", "-H", f"Host: {domain}", "-H", f"Authorization: Bearer {token}",
     "-H", "Content-Type: application/octet-stream", "-X", "POST", "--upload-file", upload_file,
     f"{base}/files/{ROOT}?Type=file&Name=by-curl.bin"],
    check=True,
)
curl_s = time.monotonic() - t0
result["upload_curl_server_cpu_s"] = round(cpu_s(server_pid) - server0, 2)
result["upload_mib"] = round(size / 2**20)
result["upload_browser_mib_s"] = round(size / 2**20 / browser_s, 1)
result["upload_curl_mib_s"] = round(size / 2**20 / curl_s, 1)
result["upload_ratio"] = round(curl_s / browser_s, 2)
# The least time the page's upload could take with its CPU spread over every core, against curl.
floor_s = sum(result["upload_page_cpu_s"].values()) / os.cpu_count()
result["upload_ratio_cpu_bound"] = round(curl_s / floor_s, 2)
print(json.dumps(result))
