#!/usr/bin/env bash
# 1 GiB uploaded over TUS (`/files/uploads/`) with curl in appends of PART_MIB MiB, on a fresh
# release server on the embedded default: the wall time and the server's CPU time (user +
# system from /proc) of each of ROUNDS uploads. An upload in several appends has its parts
# joined when the last arrives; this measures what that costs against one append (PART_MIB 1024).
# Usage: bash tests/bench/tus_parts.sh [PART_MIB] [BIN]   (ROUNDS="1 2 3" by default)
set -euo pipefail
cd "$(dirname "$0")/../.."
PART=${1:-32}
BIN=${2:-}
if [ -z "$BIN" ]; then
  cargo build --release -q -p cocon
  BIN=target/release/cocon
fi
D=$(mktemp -d -p "$PWD/target")
"$BIN" serve --data-dir "$D/data" --http-addr 127.0.0.1:28281 --admin-addr 127.0.0.1:26261 > "$D/log" 2>&1 &
PID=$!
trap 'kill $PID; wait $PID 2>/dev/null || true; rm -rf "$D"' EXIT
for _ in $(seq 100); do grep -q 'cocon ready' "$D/log" 2>/dev/null && break; sleep 0.2; done
A=(--admin http://127.0.0.1:26261 --data-dir "$D/data")
"$BIN" instances add bench.localhost "${A[@]}" > /dev/null 2>&1
TOKEN=$("$BIN" instances token-cli bench.localhost io.cozy.files "${A[@]}" 2>/dev/null)
head -c $((1024 << 20)) /dev/urandom > "$D/up.bin"
split -b $((PART << 20)) -d -a 4 "$D/up.bin" "$D/part."
H=(-H "Host: bench.localhost" -H "Authorization: Bearer $TOKEN" -H "Tus-Resumable: 1.0.0")
cpu() { awk '{print $14 + $15}' "/proc/$PID/stat"; }
for round in ${ROUNDS:-1 2 3}; do
  C0=$(cpu); T0=$(date +%s.%N)
  LOC=$(curl -sf -D - -o /dev/null "${H[@]}" -X POST -H "Upload-Length: $((1024 << 20))" \
    -H "Upload-Metadata: filename $(echo -n "f$round.bin" | base64)" http://127.0.0.1:28281/files/uploads/ |
    tr -d '\r' | sed -n 's/^[Ll]ocation: //p')
  OFF=0
  for p in "$D"/part.*; do
    curl -sf -o /dev/null "${H[@]}" -X PATCH -H "Upload-Offset: $OFF" \
      -H "Content-Type: application/offset+octet-stream" -T "$p" "http://127.0.0.1:28281$LOC"
    OFF=$((OFF + $(stat -c %s "$p")))
  done
  T1=$(date +%s.%N); C1=$(cpu)
  python3 -c "print('1 GiB in appends of ${PART} MiB: %.2f s, server CPU %.2f s' % ($T1 - $T0, ($C1 - $C0) / $(getconf CLK_TCK)))"
done
