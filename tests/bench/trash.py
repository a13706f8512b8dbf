"""Emptying a trash of many files, on a running release server: how long the background
deletion takes, and how fast other requests are answered meanwhile.

Makes N empty files (16 at a time) in one directory, trashes the directory, asks for
DELETE /files/trash, then reads a file's metadata in a loop until the trash is empty, recording
each read's latency. Prints one JSON line.

Usage: python3 tests/bench/trash.py HTTP_ADDR HOST TOKEN [N]
"""

import concurrent.futures
import json
import statistics
import sys
import time

import requests

addr, host, token = sys.argv[1:4]
n = int(sys.argv[4]) if len(sys.argv) > 4 else 100_000
base = f"http://{addr}"
headers = {"Host": host, "Authorization": f"Bearer {token}"}
session = requests.Session()


def post(path, data=b""):
    r = session.post(base + path, headers=headers, data=data)
    r.raise_for_status()
    return r.json()


big = post("/files/io.cozy.files.root-dir?Type=directory&Name=big")["data"]["id"]
kept = post("/files/io.cozy.files.root-dir?Type=file&Name=kept.txt", b"kept")["data"]["id"]

local = __import__("threading").local()


def make(i):
    s = getattr(local, "s", None) or requests.Session()
    local.s = s
    r = s.post(f"{base}/files/{big}?Type=file&Name=f{i}", headers=headers, data=b"")
    r.raise_for_status()


started = time.monotonic()
with concurrent.futures.ThreadPoolExecutor(16) as pool:
    list(pool.map(make, range(n)))
made_s = time.monotonic() - started

session.delete(f"{base}/files/{big}", headers=headers).raise_for_status()
t0 = time.monotonic()
r = session.delete(f"{base}/files/trash", headers=headers)
answered_ms = (time.monotonic() - t0) * 1000
assert r.status_code == 204, r.text

latencies = []
while True:
    t = time.monotonic()
    session.get(f"{base}/files/{kept}", headers=headers).raise_for_status()
    latencies.append((time.monotonic() - t) * 1000)
    trash = session.get(f"{base}/files/trash", headers=headers).json()
    if trash["meta"]["count"] == 0 and session.get(f"{base}/files/{big}", headers=headers).status_code == 404:
        break
emptied_s = time.monotonic() - t0
latencies.sort()
print(
    json.dumps(
        {
            "files": n,
            "create_per_s": round(n / made_s),
            "delete_answered_ms": round(answered_ms, 1),
            "emptied_s": round(emptied_s, 1),
            "deleted_per_s": round((n + 1) / emptied_s),
            "reads_meanwhile": len(latencies),
            "read_p50_ms": round(statistics.median(latencies), 2),
            "read_p99_ms": round(latencies[int(len(latencies) * 0.99) - 1], 2),
            "read_max_ms": round(latencies[-1], 2),
        }
    )
)
