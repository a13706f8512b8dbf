#!/usr/bin/env bash
# Cocon's drive app in headless Chromium, on a release server: the first screen of a folder
# of N files (10,000), what each page loads (compressed), and an upload of MIB MiB (1 GiB)
# through the page against the same upload with curl. Prints one JSON line.
# Usage: bash tests/bench/drive.sh [N] [MIB]
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-10000}
MIB=${2:-1024}
cargo build --release -q -p cocon
BIN=$PWD/target/release/cocon
D=$(mktemp -d)
"$BIN" serve --data-dir "$D/data" --http-addr 127.0.0.1:28280 --admin-addr 127.0.0.1:26260 > "$D/log" 2>&1 &
PID=$!
trap 'kill $PID; wait $PID 2>/dev/null || true; rm -rf "$D"' EXIT
for _ in $(seq 100); do grep -q 'cocon ready' "$D/log" 2>/dev/null && break; sleep 0.2; done
A=(--admin http://127.0.0.1:26260 --data-dir "$D/data")
ONBOARDING=$("$BIN" instances add bench.localhost "${A[@]}" | grep -o 'http[^"]*registerToken=[^"]*')
TOKEN=$("$BIN" instances token-cli bench.localhost io.cozy.files "${A[@]}")
head -c $((MIB << 20)) /dev/urandom > "$D/upload.bin"
SERVER_PID=$PID /usr/bin/python3 tests/bench/drive_app.py 127.0.0.1:28280 bench.localhost "$ONBOARDING" "$TOKEN" "$N" "$D/upload.bin" \
  services/jobs/apps/drive
