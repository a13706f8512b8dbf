#!/usr/bin/env bash
# Many idle instances on one node (issue 23): a release server on the embedded default gets
# instances in steps (1k, 10k, 100k, 1M by default, up to MAX) through `cocon instances import`
# (parts of 1,000 rows into a context), each with Cocon's own apps installed from the bus. After
# each step, once the server is idle: its RSS, open files, threads and data directory; then a cold
# request (`GET /public/prelogin`, which reads the instance's record) on 500 instances never
# asked before, and the same 500 again (warm), p50 and p99. At the end 100,000 instances are
# asked in turn and the RSS read again. Prints one JSON line per step.
# Usage: bash tests/bench/million.sh [MAX]
set -euo pipefail
cd "$(dirname "$0")/../.."
MAX=${1:-1000000}
cargo build --release -q -p cocon
BIN=$PWD/target/release/cocon
D=$(mktemp -d)
COCON_CONTEXTS__SCHOOL__DOMAIN_TEMPLATE='{user}.school.test' RUST_LOG=warn \
  "$BIN" serve --data-dir "$D/data" --http-addr 127.0.0.1:28381 --admin-addr 127.0.0.1:26361 > "$D/log" 2>&1 &
PID=$!
trap 'kill $PID; wait $PID 2>/dev/null || true; rm -rf "$D"' EXIT
for _ in $(seq 100); do grep -q 'cocon ready' "$D/log" 2>/dev/null && break; sleep 0.2; done
/usr/bin/python3 - "$BIN" "$D" "$PID" "$MAX" <<'PY'
import http.client, json, os, random, subprocess, sys, time
bin_, d, pid, top = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
admin = ["--admin", "http://127.0.0.1:26361", "--data-dir", f"{d}/data"]

def handled():
    c = http.client.HTTPConnection("127.0.0.1", 26361)
    c.request("GET", "/metrics")
    for line in c.getresponse().read().decode().splitlines():
        if line.startswith('cocon_events_handled_total{consumer="jobs-builtin-apps"}'):
            return int(float(line.split()[-1]))
    return 0

def status(key):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(key):
            return int(line.split()[1])

def du(path):
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs)

def latencies(users):
    conn = http.client.HTTPConnection("127.0.0.1", 28381)
    out = []
    for u in users:
        t = time.perf_counter()
        conn.request("GET", "/public/prelogin", headers={"Host": f"pupil{u:07d}.school.test"})
        r = conn.getresponse()
        r.read()
        out.append((time.perf_counter() - t) * 1000)
        assert r.status == 200, (u, r.status)
    out.sort()
    return round(out[len(out) // 2], 2), round(out[int(len(out) * 0.99)], 2)

asked = set()
done = 0
steps = sorted({s for s in (1_000, 10_000, 100_000, 1_000_000) if s < top} | {top})
for step in steps:
    with open(f"{d}/roster.csv", "w") as f:
        f.write("user,name,email\n")
        for i in range(done, step):
            f.write(f"pupil{i:07d},Pupil {i},pupil{i}@school.test\n")
    t0 = time.time()
    subprocess.run([bin_, "instances", "import", f"{d}/roster.csv", "--context", "school", "--batch", "1000", *admin],
                   check=True, stderr=subprocess.DEVNULL)
    rate = (step - done) / (time.time() - t0)
    while handled() < step:
        time.sleep(0.5)
    apps = time.time() - t0
    done = step
    # Idle: the in-process bus drops what every consumer handled 10 s after it was published.
    time.sleep(12)
    # 500 instances never asked before, drawn among 2,000 (range() samples without a list).
    fresh = [u for u in random.Random(step).sample(range(step), min(step, 2_000)) if u not in asked][:500]
    asked.update(fresh)
    rss = status("VmRSS")
    cold = latencies(fresh)
    warm = latencies(fresh)
    print(json.dumps({
        "instances": step, "import_rows_per_s": round(rate), "apps_done_after_s": round(apps, 1),
        "rss_mib": round(rss / 1024), "open_files": len(os.listdir(f"/proc/{pid}/fd")),
        "threads": status("Threads"), "disk_mib": round(du(f"{d}/data") / 2**20),
        "cold_p50_ms": cold[0], "cold_p99_ms": cold[1], "warm_p50_ms": warm[0], "warm_p99_ms": warm[1],
    }), flush=True)
n = min(done, 100_000)
t0 = time.time()
latencies(range(done - n, done))
print(json.dumps({"touched_in_turn": n, "per_s": round(n / (time.time() - t0)),
                  "rss_mib_after": round(status("VmRSS") / 1024)}), flush=True)
PY
