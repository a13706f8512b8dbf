#!/usr/bin/env bash
# Bulk provisioning on a release server: a roster of N rows (100,000) imported into a context
# with `cocon instances import` (BATCH rows per request, one commit each), then the same roster
# again (every row already there). Also: how long until every new instance has Cocon's own apps
# (installed after each creation, from the bus: `cocon_events_handled_total` of their consumer),
# and the server's RSS. Prints one JSON line.
# Usage: bash tests/bench/roster.sh [N] [BATCH]
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-100000}
BATCH=${2:-1000}
cargo build --release -q -p cocon
BIN=$PWD/target/release/cocon
D=$(mktemp -d)
COCON_CONTEXTS__SCHOOL__DOMAIN_TEMPLATE='{user}.school.test' COCON_CONTEXTS__SCHOOL__DISK_QUOTA=2GB \
  "$BIN" serve --data-dir "$D/data" --http-addr 127.0.0.1:28380 --admin-addr 127.0.0.1:26360 > "$D/log" 2>&1 &
PID=$!
trap 'kill $PID; wait $PID 2>/dev/null || true; rm -rf "$D"' EXIT
for _ in $(seq 100); do grep -q 'cocon ready' "$D/log" 2>/dev/null && break; sleep 0.2; done
A=(--admin http://127.0.0.1:26360 --data-dir "$D/data")
/usr/bin/python3 - "$N" > "$D/roster.csv" <<'PY'
import sys
n = int(sys.argv[1])
print("user,name,email,class")
for i in range(n):
    print(f"pupil{i:07d},Pupil {i},pupil{i}@school.test,{'6' + 'ABCD'[i % 4]}")
PY
now() { date +%s.%N; }
T0=$(now)
"$BIN" instances import "$D/roster.csv" --context school --batch "$BATCH" "${A[@]}" 2> "$D/first"
T1=$(now)
"$BIN" instances import "$D/roster.csv" --context school --batch "$BATCH" "${A[@]}" 2> "$D/again"
T2=$(now)
# Every new instance's apps are installed once the consumer of the creations has handled N.
handled() {
  curl -s http://127.0.0.1:26360/metrics |
    awk '/^cocon_events_handled_total\{consumer="jobs-builtin-apps"\}/ {print $2}'
}
until [ "$(handled)" = "$N" ]; do sleep 0.5; done
T3=$(now)
RSS=$(awk '/VmRSS/ {print $2}' /proc/$PID/status)
/usr/bin/python3 - "$N" "$T0" "$T1" "$T2" "$T3" "$RSS" "$D/first" "$D/again" <<'PY'
import json, sys
n, t0, t1, t2, t3, rss = int(sys.argv[1]), *map(float, sys.argv[2:6]), int(sys.argv[6])
first, again = (open(p).read().strip().splitlines()[-1] for p in sys.argv[7:9])
print(json.dumps({
    "rows": n,
    "import_rows_per_s": round(n / (t1 - t0)),
    "rerun_rows_per_s": round(n / (t2 - t1)),
    "apps_installed_after_s": round(t3 - t0, 1),
    "rss_mib": round(rss / 1024),
    "first": first, "again": again,
}))
PY
