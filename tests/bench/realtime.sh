#!/usr/bin/env bash
# Realtime on a fresh release build of the embedded default, with real websockets:
#   bash tests/bench/realtime.sh [SOCKETS]
# starts `cocon serve` in a temporary data directory and runs realtime_bench (see its header):
# the write rate with and without SOCKETS sockets listening to other instances, the server's
# memory per socket, write-to-event latency with 1,000 subscribers, and the fan-out to SOCKETS.
set -euo pipefail
cd "$(dirname "$0")/../.."
SOCKETS=${1:-10000}
cargo build --release -q -p cocon -p cocon-tests --bin cocon --bin realtime_bench
D=$(mktemp -d)
trap 'kill $PID 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$D"' EXIT
# Two sockets' worth of descriptors per connection between the two processes.
ulimit -n "$(ulimit -Hn)"
RUST_LOG=warn target/release/cocon serve --data-dir "$D/data" --http-addr 127.0.0.1:28080 \
  --admin-addr 127.0.0.1:26060 > "$D/cocon.log" 2>&1 &
PID=$!
for _ in $(seq 100); do grep -q 'cocon ready' "$D/cocon.log" 2>/dev/null && break; sleep 0.2; done
grep -q 'cocon ready' "$D/cocon.log" || { cat "$D/cocon.log"; exit 1; }
target/release/realtime_bench http://127.0.0.1:28080 http://127.0.0.1:26060 "$(cat "$D/data/admin-token")" "$PID" "$SOCKETS"
