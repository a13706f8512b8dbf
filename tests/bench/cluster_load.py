#!/usr/bin/env python3
"""Steady load on a running Cocon cluster (`deploy/cluster.sh --load SECONDS` starts one and
runs this): durable note writes, reads of notes written earlier, uploads and downloads, over
many instances, through both gateways in turn, from several workers (--mix writes: durable
writes only); while it runs, the nodes given with --kill are killed with SIGKILL at their times,
and --mark names a moment something else happens (a node restarted). Reports, per phase between
events and per kind of request: how many, how many failed, p50 and p99 latency, and the rate;
the JSON goes to --out.

  python3 tests/bench/cluster_load.py --gateways 127.0.0.1:24041,127.0.0.1:24042 \\
      --admin http://127.0.0.1:24043 --token TOKEN --seconds 90 \\
      --kill 30:storage:PID --kill 60:nats:PID
"""
import argparse
import http.client
import json
import os
import random
import signal
import threading
import time
import urllib.parse
import uuid

FILE_SIZE = 256 * 1024


def admin(base, token, method, path):
    url = urllib.parse.urlparse(base)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    conn.request(method, path, headers={"Authorization": f"Bearer {token}"})
    res = conn.getresponse()
    body = res.read()
    if res.status >= 300:
        raise SystemExit(f"{method} {path}: {res.status} {body[:200]!r}")
    return json.loads(body) if body else None


class Worker(threading.Thread):
    def __init__(self, n, gateways, instances, until, results, lock, writes_only):
        super().__init__(daemon=True)
        self.writes_only = writes_only
        self.n, self.gateways, self.instances = n, gateways, instances
        self.until, self.results, self.lock = until, results, lock
        self.conns = {}
        self.notes = []  # (instance index, id)
        self.files = []  # (instance index, id)
        self.blob = os.urandom(FILE_SIZE)
        self.turn = n

    def conn(self, gateway):
        if gateway not in self.conns:
            host, port = gateway.rsplit(":", 1)
            self.conns[gateway] = http.client.HTTPConnection(host, int(port), timeout=30)
        return self.conns[gateway]

    def request(self, kind, instance, method, path, body=None, ctype=None):
        self.turn += 1
        gateway = self.gateways[self.turn % len(self.gateways)]
        domain, token = self.instances[instance]
        headers = {"Host": domain, "Authorization": f"Bearer {token}"}
        if ctype:
            headers["Content-Type"] = ctype
        start = time.monotonic()
        status, data = 0, b""
        try:
            conn = self.conn(gateway)
            conn.request(method, path, body=body, headers=headers)
            res = conn.getresponse()
            status, data = res.status, res.read()
        except Exception:  # a refused or broken connection is a failed request
            self.conns.pop(gateway, None)
        took = time.monotonic() - start
        ok = 200 <= status < 300
        with self.lock:
            self.results.append((start, kind, ok, took, status))
        return ok, data

    def run(self):
        while time.monotonic() < self.until:
            instance = random.randrange(len(self.instances))
            roll = random.random()
            if self.writes_only or roll < 0.4 or not self.notes:
                doc = uuid.uuid4().hex
                body = json.dumps({"title": f"note {doc}", "worker": self.n}).encode()
                ok, _ = self.request("write", instance, "PUT", f"/data/io.cozy.notes/{doc}", body, "application/json")
                if ok:
                    self.notes.append((instance, doc))
            elif roll < 0.7:
                instance, doc = random.choice(self.notes)
                self.request("read", instance, "GET", f"/data/io.cozy.notes/{doc}")
            elif roll < 0.85 or not self.files:
                name = uuid.uuid4().hex
                ok, data = self.request(
                    "upload", instance, "POST",
                    f"/files/io.cozy.files.root-dir?Type=file&Name={name}.bin",
                    self.blob, "application/octet-stream",
                )
                if ok:
                    self.files.append((instance, json.loads(data)["data"]["id"]))
            else:
                instance, file_id = random.choice(self.files)
                self.request("download", instance, "GET", f"/files/download/{file_id}")


def percentile(values, p):
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gateways", required=True, help="host:port of each gateway, comma-separated")
    ap.add_argument("--admin", required=True)
    ap.add_argument("--token", required=True, help="the admin token")
    ap.add_argument("--instances", type=int, default=20)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--seconds", type=int, default=90)
    ap.add_argument("--kill", action="append", default=[], help="AT:LABEL:PID (seconds after the start)")
    ap.add_argument("--mark", action="append", default=[], help="AT:LABEL: a phase starts (something happens then)")
    ap.add_argument("--mix", choices=["mixed", "writes"], default="mixed")
    ap.add_argument("--out", default="cluster_load.json")
    args = ap.parse_args()

    instances = []
    for i in range(args.instances):
        domain = f"load{i}.cluster"
        admin(args.admin, args.token, "POST", f"/instances?Domain={domain}")
        scope = urllib.parse.quote("io.cozy.notes io.cozy.files")
        token = admin(args.admin, args.token, "POST", f"/instances/token?Domain={domain}&Scope={scope}")["token"]
        instances.append((domain, token))
    print(f"{len(instances)} instances; {args.workers} workers for {args.seconds} s", flush=True)

    results, lock = [], threading.Lock()
    start = time.monotonic()
    until = start + args.seconds
    workers = [
        Worker(n, args.gateways.split(","), instances, until, results, lock, args.mix == "writes")
        for n in range(args.workers)
    ]
    for w in workers:
        w.start()
    kills = [(float(at), f"{label} killed", int(pid)) for at, label, pid in (k.split(":") for k in args.kill)]
    marks = [(float(at), label, None) for at, label in (m.split(":", 1) for m in args.mark)]
    events = sorted(kills + marks)
    for at, label, pid in events:
        time.sleep(max(0.0, start + at - time.monotonic()))
        if pid is None:
            continue
        try:
            os.kill(pid, signal.SIGKILL)
            print(f"{time.monotonic() - start:.1f} s: {label} (pid {pid})", flush=True)
        except ProcessLookupError:
            print(f"{label}: pid {pid} was not running", flush=True)
    for w in workers:
        w.join()

    bounds = [0.0] + [at for at, _, _ in events] + [float(args.seconds)]
    names = ["before"] + [f"after {label}" for _, label, _ in events]
    report = []
    for (lo, hi), name in zip(zip(bounds, bounds[1:]), names):
        phase = {"phase": name, "from_s": lo, "to_s": hi, "kinds": {}}
        for kind in ["write", "read", "upload", "download"]:
            rows = [r for r in results if r[1] == kind and lo <= r[0] - start < hi]
            lat = [r[3] * 1000 for r in rows]
            failed = [r for r in rows if not r[2]]
            phase["kinds"][kind] = {
                "requests": len(rows),
                "failed": len(failed),
                "statuses": sorted({r[4] for r in failed}),
                "p50_ms": round(percentile(lat, 0.5), 1),
                "p99_ms": round(percentile(lat, 0.99), 1),
                "per_s": round(len(rows) / max(hi - lo, 1e-9), 1),
            }
        report.append(phase)
    print("| phase | request | count | failed | p50 ms | p99 ms | per s |")
    print("|---|---|---|---|---|---|---|")
    for phase in report:
        for kind, k in phase["kinds"].items():
            print(f"| {phase['phase']} | {kind} | {k['requests']} | {k['failed']} {k['statuses'] or ''} "
                  f"| {k['p50_ms']} | {k['p99_ms']} | {k['per_s']} |")
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1)
    failed = sum(k["failed"] for p in report for k in p["kinds"].values())
    print(f"{failed} failed requests of {len(results)}; JSON in {args.out}")


if __name__ == "__main__":
    main()
