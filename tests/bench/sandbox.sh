#!/usr/bin/env bash
# The konnector sandbox's cost: a no-op konnector run N times with jobs.konnectors.sandbox =
# bwrap, then = none, on a release server. Two times per run: the process's, from its spawn to
# its exit (the worker logs it), and the job's, finished_at minus started_at (with the token
# issued and revoked, the work directory made and removed). Prints p50 and p90 of each.
# Usage: bash tests/bench/sandbox.sh [N]
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-30}
cargo build --release -q -p cocon
BIN=target/release/cocon
KONN=$(mktemp -d)
echo '{"slug":"noop","name":"No-op","version":"1.0.0"}' > "$KONN/manifest.konnector"
echo 'console.log(JSON.stringify({type:"info",message:"done"}))' > "$KONN/index.js"
for mode in bwrap none; do
  D=$(mktemp -d)
  COCON_JOBS__KONNECTORS__SANDBOX=$mode RUST_LOG=warn,cocon_jobs::workers::konnector=info $BIN serve --data-dir "$D" \
    --http-addr 127.0.0.1:28180 --admin-addr 127.0.0.1:26160 > "$D/log" 2>&1 &
  PID=$!
  for _ in $(seq 50); do grep -q 'cocon ready' "$D/log" 2>/dev/null && break; sleep 0.2; done
  A=(--domain bench.localhost --url http://127.0.0.1:28180 --admin http://127.0.0.1:26160 --data-dir "$D")
  $BIN instances add bench.localhost --admin http://127.0.0.1:26160 --data-dir "$D" > /dev/null 2>&1
  $BIN konnectors install noop "$KONN" "${A[@]}" > /dev/null 2>&1
  for _ in $(seq "$N"); do
    $BIN konnectors run noop "${A[@]}" 2>/dev/null | python3 -c '
import json, sys
from datetime import datetime
a = json.load(sys.stdin)["attributes"]
t = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()
print((t(a["finished_at"]) - t(a["started_at"])) * 1000)'
  done | sort -n | awk -v mode="$mode" '{v[NR]=$1} END {printf "sandbox=%s runs=%d job p50_ms=%.1f p90_ms=%.1f\n", mode, NR, v[int(NR*0.5)+1], v[int(NR*0.9)]}'
  sed 's/\x1b\[[0-9;]*m//g' "$D/log" | grep -o 'konnector ended.*seconds=[0-9.e-]*' | sed 's/.*seconds=//' \
    | awk '{print $1 * 1000}' | sort -n \
    | awk -v mode="$mode" '{v[NR]=$1} END {printf "sandbox=%s runs=%d process p50_ms=%.1f p90_ms=%.1f\n", mode, NR, v[int(NR*0.5)+1], v[int(NR*0.9)]}'
  kill "$PID"; wait "$PID" 2>/dev/null || true
  rm -rf "$D"
done
rm -rf "$KONN"
