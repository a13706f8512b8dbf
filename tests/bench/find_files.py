"""`POST /files/_find` on a large drive, on a running release server: the queries apps send
(a directory's files, a set of ids, an album's photos), each answered through the table that
indexes its candidates, against the same query under `$or`, which nothing indexes, so the
server scans every node. Same server, same data, alternated.

Makes DIRS directories of PER files each (16 requests at a time), puts 50 files of one
directory in an album, then times each query RUNS times both ways. Prints one JSON line per
query: median and max milliseconds, narrow and scanned, and the `meta.count` of the first page
(the same both ways).

With SERVER_PID set, also prints the server's CPU time per scanned query (utime + stime from
/proc), which drifts less than wall time on a shared machine.

Usage: python3 tests/bench/find_files.py HTTP_ADDR HOST TOKEN [DIRS] [PER] [RUNS]
"""

import concurrent.futures
import json
import os
import statistics
import sys
import threading
import time

import requests

addr, host, token = sys.argv[1:4]
dirs = int(sys.argv[4]) if len(sys.argv) > 4 else 50
per = int(sys.argv[5]) if len(sys.argv) > 5 else 1000
runs = int(sys.argv[6]) if len(sys.argv) > 6 else 5
base = f"http://{addr}"
headers = {"Host": host, "Authorization": f"Bearer {token}"}
session = requests.Session()
local = threading.local()


def post(path, data=b"", s=None):
    r = (s or session).post(base + path, headers=headers, data=data)
    r.raise_for_status()
    return r.json()


def make(job):
    s = getattr(local, "s", None) or requests.Session()
    local.s = s
    parent, name = job
    return post(f"/files/{parent}?Type=file&Name={name}", b"", s)["data"]["id"]


started = time.monotonic()
ids = []
dir_ids = []
with concurrent.futures.ThreadPoolExecutor(16) as pool:
    for d in range(dirs):
        dir_id = post(f"/files/io.cozy.files.root-dir?Type=directory&Name=d{d}")["data"]["id"]
        dir_ids.append(dir_id)
        ids.append(list(pool.map(make, [(dir_id, f"f{i}.jpg") for i in range(per)])))
made_s = time.monotonic() - started

album = {"type": "io.cozy.photos.albums", "id": "bench"}
for file_id in ids[1][:50]:
    r = session.post(
        f"{base}/files/{file_id}/relationships/referenced_by",
        headers=headers,
        data=json.dumps({"data": [album]}),
    )
    r.raise_for_status()

queries = {
    "a directory's files, by name": {"dir_id": dir_ids[0], "type": "file"},
    "20 files by id": {"_id": {"$in": ids[2][:20]}},
    "an album's photos": {"referenced_by": {"$elemMatch": album}, "class": "image"},
}


def cpu_ms():
    pid = os.environ.get("SERVER_PID")
    if not pid:
        return 0.0
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


def timed(selector):
    t = time.monotonic()
    r = session.post(
        f"{base}/files/_find",
        headers=headers,
        data=json.dumps({"selector": selector, "sort": ["name"], "limit": 100}),
    )
    r.raise_for_status()
    return (time.monotonic() - t) * 1000, r.json()["meta"]["count"]


print(json.dumps({"nodes": dirs * (per + 1), "made_s": round(made_s, 1)}))
for label, selector in queries.items():
    narrow, scanned, counts, scan_cpu = [], [], set(), 0.0
    for _ in range(runs):
        ms, n = timed(selector)
        narrow.append(ms)
        counts.add(n)
        before = cpu_ms()
        ms, n = timed({"$or": [selector]})
        scan_cpu += cpu_ms() - before
        scanned.append(ms)
        counts.add(n)
    print(
        json.dumps(
            {
                "query": label,
                "page_count": sorted(counts),
                "narrow_ms_median": round(statistics.median(narrow), 1),
                "narrow_ms_max": round(max(narrow), 1),
                "scanned_ms_median": round(statistics.median(scanned), 1),
                "scanned_ms_max": round(max(scanned), 1),
                **({"scanned_cpu_ms_mean": round(scan_cpu / runs, 1)} if os.environ.get("SERVER_PID") else {}),
            }
        )
    )
