"""A large upload through the drive app that the network breaks, in a real browser:

  drive_resume.py UPSTREAM_PORT DOMAIN PASSPHRASE FILE LIMIT CUT_AFTER

puts between Chromium and Cocon (on 127.0.0.1:UPSTREAM_PORT) a proxy such as the ones people
run: it refuses a request body over LIMIT bytes with a 413 and no CORS headers (nginx's
`client_max_body_size` does so), and it breaks the connection of the first TUS append it lets
through once CUT_AFTER bytes of its body went by. Signs in on the drive through the proxy and
uploads FILE. Prints one JSON line: the upload's status and every append and HEAD the proxy
saw (method, Upload-Offset, Content-Length, what the proxy did with it).
"""

import json
import os
import socket
import sys
import threading

from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

import pages

upstream, domain, passphrase, upload_file, limit, cut_after = sys.argv[1:7]
upstream, limit, cut_after = int(upstream), int(limit), int(cut_after)
seen = {"requests": []}
lock = threading.Lock()
state = {"cut": False}


def pump(src, dst):
    try:
        while data := src.recv(1 << 16):
            dst.sendall(data)
    except OSError:
        pass
    for s in (src, dst):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def read_head(conn, buf):
    while b"\r\n\r\n" not in buf:
        data = conn.recv(1 << 16)
        if not data:
            return None, b""
        buf += data
    head, rest = buf.split(b"\r\n\r\n", 1)
    return head, rest


def client(conn):
    """One browser connection: requests go upstream one after the other, answers come back raw."""
    up = socket.create_connection(("127.0.0.1", upstream))
    threading.Thread(target=pump, args=(up, conn), daemon=True).start()
    buf = b""
    try:
        while True:
            head, buf = read_head(conn, buf)
            if head is None:
                break
            lines = head.decode("latin-1").split("\r\n")
            method, path = lines[0].split(" ")[:2]
            fields = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:] if ":" in line)}
            length = int(fields.get("content-length", "0"))
            entry = {"method": method, "offset": fields.get("upload-offset"), "length": length}
            tus = path.startswith("/files/uploads/") and method in ("PATCH", "HEAD")
            if tus:
                with lock:
                    seen["requests"].append(entry)
            if length > limit:
                # Read the body whole before the refusal, as nginx does, so the browser sees it.
                left = length - len(buf)
                buf = b""
                while left > 0:
                    data = conn.recv(min(left, 1 << 16))
                    if not data:
                        break
                    left -= len(data)
                entry["proxy"] = "413"
                conn.sendall(b"HTTP/1.1 413 Request Entity Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                break
            up.sendall(head + b"\r\n\r\n")
            with lock:
                cut = method == "PATCH" and tus and not state["cut"]
                state["cut"] = state["cut"] or cut
            sent = 0
            while sent < length:
                if not buf:
                    buf = conn.recv(1 << 16)
                    if not buf:
                        return
                take = buf[: length - sent]
                buf = buf[len(take) :]
                if cut and sent + len(take) >= cut_after:
                    entry["proxy"] = f"cut after {sent} bytes"
                    return
                up.sendall(take)
                sent += len(take)
    except OSError:
        pass
    finally:
        for s in (conn, up):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


listener = socket.create_server(("127.0.0.1", 0))
port = listener.getsockname()[1]


def accept():
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=client, args=(conn,), daemon=True).start()


threading.Thread(target=accept, daemon=True).start()

driver = pages.start()
try:
    drive_url = f"http://drive.{domain}:{port}/"
    driver.get(drive_url)
    pages.check(driver, "/auth/login" in driver.current_url, f"sent to sign in, at {driver.current_url}")
    pages.submit_form(driver, "/auth/login", {"password": passphrase})
    WebDriverWait(driver, 30).until(
        lambda d: d.execute_script("const a = document.getElementById('app'); return a && a.dataset.ready === 'true'")
    )
    driver.find_element(By.ID, "upload-files").send_keys(upload_file)
    WebDriverWait(driver, 120).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#upload-list li[data-done]"))
    item = driver.find_element(By.CSS_SELECTOR, "#upload-list li[data-done]")
    seen["done"] = item.get_attribute("data-done")
    seen["text"] = item.text
    seen["name"] = os.path.basename(upload_file)
finally:
    driver.quit()
print(json.dumps(seen))
