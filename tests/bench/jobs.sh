#!/usr/bin/env bash
# Jobs figures on a fresh release server (embedded), through its public API with jobs_bench:
#   bash tests/bench/jobs.sh throughput 50000 32     # no-op jobs, enqueue to done
#   bash tests/bench/jobs.sh event 1000               # write acknowledged → @event job running
#   bash tests/bench/jobs.sh schedule 1000 100 1m 150 # @every triggers over many instances
# Prints jobs_bench's line and the server's CPU (clock ticks) and RSS at the end.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release -q -p cocon -p cocon-tests --bin cocon --bin jobs_bench
D=$(mktemp -d)
RUST_LOG=warn target/release/cocon serve --data-dir "$D" --http-addr 127.0.0.1:28080 \
  --admin-addr 127.0.0.1:26060 > "$D/log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true; wait $PID 2>/dev/null || true; rm -rf "$D"' EXIT
for _ in $(seq 50); do grep -q 'cocon ready' "$D/log" 2>/dev/null && break; sleep 0.2; done
if [ "$1" = schedule ]; then
  target/release/jobs_bench http://127.0.0.1:28080 http://127.0.0.1:26060 "$(cat "$D/admin-token")" "$@"
else
  A=(--admin http://127.0.0.1:26060 --data-dir "$D")
  target/release/cocon instances add bench.localhost "${A[@]}" > /dev/null 2>&1
  T=$(target/release/cocon instances token-cli bench.localhost io.cozy.jobs io.cozy.triggers io.cozy.bench "${A[@]}" 2>/dev/null)
  target/release/jobs_bench http://127.0.0.1:28080 bench.localhost "$T" "$@"
fi
echo "server cpu_ticks=$(awk '{print $14+$15}' /proc/$PID/stat) rss_kb=$(ps -o rss= -p $PID)"
