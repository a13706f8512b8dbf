#!/usr/bin/env bash
# The drive's benchmark, on a release build: 1 GiB upload and download on the local-disk
# backend against the disk's own sequential write and read (dd, same filesystem, same run), the
# same on S3 against the S3 server's own PUT and GET measured with a plain S3 client (curl's
# SigV4), 4 KiB file creates per second at 16 connections, and the peak RSS of the server while
# a 5 GiB file goes up and comes back down.
# Needs wrk (apt-get install -y wrk) and s3s-fs (cargo install --locked s3s-fs@0.14.1 --features binary).
# Usage: bash tests/bench/files.sh [GIB_FOR_THE_RSS_RUN]   (COCON=path/to/cocon to measure
# another build; by default this checkout's release build)
set -euo pipefail
cd "$(dirname "$0")/../.."
BIG_GIB=${1:-5}
WORK=$(mktemp -d -p "${BENCH_DIR:-$PWD/target}")
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

if [ -z "${COCON:-}" ]; then
  cargo build --release --quiet -p cocon
  COCON=target/release/cocon
fi
cargo build --release --quiet -p cocon-tests --bin md5_rate
MIB=1024

start() { # LOG CMD… : runs CMD, waits for its "ready" line
  local log=$1; shift
  : > "$log"
  "$@" > "$log" 2>"$log.err" &
  PIDS+=($!)
  for _ in $(seq 600); do
    if grep -q ' ready ' "$log"; then return; fi
    sleep 0.05
  done
  echo "did not start: $*" >&2; cat "$log.err" >&2; exit 1
}
addr() { grep '^cocon ready' "$1" | sed -n "s/.*$2=\([^ ]*\).*/\1/p"; }
mbps() { python3 -c "print(round($1 / 1e6, 1))"; }
ratio() { python3 -c "print(round(100 * $1 / $2, 1))"; }

# Runs cocon with ENV… on its own data dir; sets HTTP, PID_COCON and H (Host + token headers).
cocon() {
  local name=$1; shift
  start "$WORK/$name.log" env "$@" $COCON serve --data-dir "$WORK/$name" --http-addr 127.0.0.1:0 --admin-addr 127.0.0.1:0
  PID_COCON=${PIDS[-1]}
  HTTP=$(addr "$WORK/$name.log" http)
  local admin; admin=$(addr "$WORK/$name.log" admin)
  export COCON_ADMIN_TOKEN; COCON_ADMIN_TOKEN=$(cat "$WORK/$name/admin-token")
  $COCON instances add bench.localhost --admin "http://$admin" > /dev/null 2>&1
  local token; token=$($COCON instances token-cli bench.localhost io.cozy.files --admin "http://$admin")
  H=(-H "Host: bench.localhost" -H "Authorization: Bearer $token")
}

upload() { # NAME FILE → bytes/s
  curl -sf "${H[@]}" -X POST -H 'Content-Type: application/octet-stream' -T "$2" \
    -o "$WORK/up.json" -w '%{speed_upload}' "http://$HTTP/files/io.cozy.files.root-dir?Type=file&Name=$1"
}
download() { # NAME → bytes/s
  local id; id=$(curl -sf "${H[@]}" "http://$HTTP/files/metadata?Path=/$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["id"])')
  curl -sf "${H[@]}" -o /dev/null -w '%{speed_download}' "http://$HTTP/files/download/$id"
}

echo "== 1 GiB test file"
head -c $((MIB << 20)) /dev/urandom > "$WORK/1g.bin"
sync

echo "== the disk (dd, 1 MiB blocks, same filesystem; median of 3, it varies run to run)"
dd_bps() { # DD-ARGS… → bytes/s
  dd "$@" bs=1M 2>&1 | python3 -c '
import re,sys; m=re.search(r"copied, ([0-9.]+) s", sys.stdin.read()); print(int((1 << 30) / float(m.group(1))))'
}
median() { tr ' ' '\n' | sort -n | awk '{v[NR]=$1} END {print v[int((NR + 1) / 2)]}'; }
W=(); R=()
for i in 1 2 3; do
  W+=("$(dd_bps if="$WORK/1g.bin" of="$WORK/dd.bin" conv=fdatasync)")
  R+=("$(dd_bps if="$WORK/dd.bin" of=/dev/null iflag=direct)")
  rm -f "$WORK/dd.bin"
done
DISK_W_BPS=$(echo "${W[*]}" | median)
DISK_R_BPS=$(echo "${R[*]}" | median)
echo "disk write+fdatasync: $(mbps "$DISK_W_BPS") MB/s (runs: ${W[*]} B/s); direct read: $(mbps "$DISK_R_BPS") MB/s (runs: ${R[*]} B/s)"
# An upload is hashed (MD5) on one core as it streams: the slower of the disk and the hash is
# what an upload can reach.
MD5_BPS=$(target/release/md5_rate "$WORK/1g.bin")
UP_LIMIT=$(( MD5_BPS < DISK_W_BPS ? MD5_BPS : DISK_W_BPS ))
echo "MD5 on one core (md-5, 1 MiB blocks, best of 3): $(mbps "$MD5_BPS") MB/s; an upload's limit: $(mbps "$UP_LIMIT") MB/s"

echo "== peak RSS of a fresh server while ${BIG_GIB} GiB go up and down (chunked, no length)"
cocon rss
RSS_BEFORE=$(awk '/VmRSS/ {print $2}' "/proc/$PID_COCON/status")
head -c $((BIG_GIB << 30)) /dev/zero | curl -sf "${H[@]}" -X POST -T - -o /dev/null \
  -w "upload %{speed_upload} B/s\n" "http://$HTTP/files/io.cozy.files.root-dir?Type=file&Name=big.bin"
echo "download $(download big.bin) B/s"
echo "RSS before $((RSS_BEFORE / 1024)) MiB, peak (VmHWM) $(( $(awk '/VmHWM/ {print $2}' "/proc/$PID_COCON/status") / 1024 )) MiB"
kill "$PID_COCON"

echo "== cocon, local-disk blobs"
cocon local
for i in 1 2 3; do
  UP=$(upload "local$i.bin" "$WORK/1g.bin")
  DOWN=$(download "local$i.bin")
  echo "run $i: upload $(mbps "$UP") MB/s ($(ratio "$UP" "$UP_LIMIT") % of the slower of the disk and MD5), download $(mbps "$DOWN") MB/s ($(ratio "$DOWN" "$DISK_R_BPS") % of its direct read)"
done

echo "== 4 KiB file creates, 16 connections, 10 s"
head -c 4096 /dev/urandom > "$WORK/4k.bin"
cat > "$WORK/create.lua" <<LUA
local threads = 0
function setup(thread) threads = threads + 1; thread:set("tid", threads) end
local f = io.open("$WORK/4k.bin", "rb"); local body = f:read("*a"); f:close()
local n = 0
request = function()
  n = n + 1
  return wrk.format("POST", "/files/io.cozy.files.root-dir?Type=file&Name=f" .. tid .. "-" .. n, nil, body)
end
LUA
wrk --latency -t2 -c16 -d10s "${H[@]}" -s "$WORK/create.lua" "http://$HTTP" | awk '
  /^ +50%/ {p50=$2} /^ +99%/ {p99=$2} /^Requests\/sec/ {rps=$2} /Non-2xx/ {bad=$NF}
  END {printf "creates: %s/s, p50 %s, p99 %s, non-2xx %s\n", rps, p50, p99, bad ? bad : 0}'
kill "$PID_COCON"


echo "== S3 (s3s-fs on loopback)"
mkdir -p "$WORK/s3"
S3_SECRET=bench-secret-key
RUST_LOG=info NO_COLOR=1 s3s-fs --host 127.0.0.1 --port 0 --access-key bench --secret-key "$S3_SECRET" "$WORK/s3" > "$WORK/s3.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 200); do grep -q 'server is running at' "$WORK/s3.log" && break; sleep 0.05; done
S3=$(sed -n 's/.*server is running at \(http[^ ]*\).*/\1/p' "$WORK/s3.log" | head -1)
S3C=(--aws-sigv4 "aws:amz:us-east-1:s3" --user "bench:$S3_SECRET" -H "x-amz-content-sha256: UNSIGNED-PAYLOAD")
curl -sf "${S3C[@]}" -X PUT "$S3/raw" > /dev/null
cocon s3 COCON_FILES__BLOBS=s3 COCON_FILES__S3__ENDPOINT="$S3" COCON_FILES__S3__BUCKET=drive \
  COCON_FILES__S3__ACCESS_KEY=bench COCON_FILES__S3__SECRET_KEY="$S3_SECRET"
# Each run pairs the plain client with cocon, back to back: this machine's speed drifts by tens
# of percent over minutes, so a ratio is only fair between neighbours.
for i in 1 2 3; do
  RAW_UP=$(curl -sf "${S3C[@]}" -T "$WORK/1g.bin" -o /dev/null -w '%{speed_upload}' "$S3/raw/1g.bin")
  RAW_DOWN=$(curl -sf "${S3C[@]}" -o /dev/null -w '%{speed_download}' "$S3/raw/1g.bin")
  curl -sf "${S3C[@]}" -X DELETE "$S3/raw/1g.bin" > /dev/null
  UP=$(upload "s3-$i.bin" "$WORK/1g.bin")
  DOWN=$(download "s3-$i.bin")
  echo "run $i: plain S3 client PUT $(mbps "$RAW_UP") MB/s, GET $(mbps "$RAW_DOWN") MB/s;" \
    "cocon upload $(mbps "$UP") MB/s ($(ratio "$UP" "$RAW_UP") % of the plain PUT), download $(mbps "$DOWN") MB/s ($(ratio "$DOWN" "$RAW_DOWN") % of the plain GET)"
done
