#!/usr/bin/env bash
# What revision trees cost document writes, on a fresh release server (embedded), through
# /data with docs_bench: DOCS clients each update their own document UPDATES times in a row.
#   bash tests/bench/docs.sh 64 1200
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release -q -p cocon -p cocon-tests --bin cocon --bin docs_bench
D=$(mktemp -d)
RUST_LOG=warn target/release/cocon serve --data-dir "$D" --http-addr 127.0.0.1:28080 \
  --admin-addr 127.0.0.1:26060 > "$D/log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true; wait $PID 2>/dev/null || true; rm -rf "$D"' EXIT
for _ in $(seq 50); do grep -q 'cocon ready' "$D/log" 2>/dev/null && break; sleep 0.2; done
A=(--admin http://127.0.0.1:26060 --data-dir "$D")
target/release/cocon instances add bench.localhost "${A[@]}" > /dev/null 2>&1
T=$(target/release/cocon instances token-cli bench.localhost io.cozy.bench "${A[@]}" 2>/dev/null)
target/release/docs_bench http://127.0.0.1:28080 bench.localhost "$T" "${1:-64}" "${2:-1200}"
echo "server cpu_ticks=$(awk '{print $14+$15}' /proc/$PID/stat) rss_kb=$(ps -o rss= -p $PID) data=$(du -sh "$D" | cut -f1)"
