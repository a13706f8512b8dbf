#!/usr/bin/env bash
# A/B comparison of cocon binaries on one request type, each run paired with a hello-world run:
# requests/s and the server's CPU per request (utime + stime from /proc/<pid>/stat over the run,
# divided by the requests served), which drifts less than requests/s on a shared machine.
# Needs wrk. Usage: bash tests/bench/ab.sh get|post|file BIN [BIN…]   (ROUNDS=2 SECS=8 CONNS=64)
# `file` reads a file's metadata (GET /files/:id, a JSON-API resource made from the files
# service's answer).
# `post-tail` measures the POST latency percentiles with autocannon instead (npm install -g
# autocannon), as wrk's POST latencies are not trusted on these shared cores (benchmarks.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
KIND=$1; shift
ROUNDS=${ROUNDS:-2} SECS=${SECS:-8} CONNS=${CONNS:-64}
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
cargo build --release --quiet -p cocon-tests --bin hello

cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
measure() { # PID wrk-args… → "rps=… cpu_us_per_req=…"
  local pid=$1; shift
  local c0 out c1
  c0=$(cpu "$pid")
  out=$(wrk -t2 -d"${SECS}s" -c"$CONNS" "$@")
  c1=$(cpu "$pid")
  echo "$out" | awk -v c0="$c0" -v c1="$c1" -v hz="$(getconf CLK_TCK)" '
    /requests in/ {n=$1} /^Requests\/sec/ {rps=$2}
    END {printf "rps=%s cpu_us_per_req=%.1f\n", rps, (c1 - c0) * 1e6 / hz / n}'
}

tail_latency() { # wrk-style headers… URL → "rps=… p50=… p99=… max=… ms" (autocannon)
  local args=() url
  while [ $# -gt 1 ]; do args+=("$1" "${2/: /=}"); shift 2; done
  url=$1
  autocannon -j -c "$CONNS" -d "$SECS" -m POST "${args[@]}" -H Content-Type=application/json \
    -b '{"title":"bench","n":42,"tags":["a","b"]}' "$url" 2>/dev/null \
    | python3 -c 'import json,sys; r=json.load(sys.stdin); l=r["latency"]
print("rps=%d p50=%s p99=%s max=%s ms non2xx=%d" % (r["requests"]["average"], l["p50"], l["p99"], l["max"], r["non2xx"]))'
}

target/release/hello 127.0.0.1:0 > "$WORK/hello.log" &
PIDS+=($!)
HELLO_PID=$!
until grep -q ' ready ' "$WORK/hello.log" 2>/dev/null; do sleep 0.05; done
HELLO=$(sed -n 's/.*http=\([^ ]*\).*/\1/p' "$WORK/hello.log")
printf 'wrk.method = "POST"\nwrk.body = %s\nwrk.headers["Content-Type"] = "application/json"\n' \
  "'{\"title\":\"bench\",\"n\":42,\"tags\":[\"a\",\"b\"]}'" > "$WORK/post.lua"

for round in $(seq "$ROUNDS"); do
  echo "round $round hello: $(measure "$HELLO_PID" "http://$HELLO/")"
  n=0
  for bin in "$@"; do
    n=$((n + 1)) # binaries are often all named cocon: each gets its own data directory
    data="$WORK/data-$round-$n"
    : > "$WORK/cocon.log"
    "$bin" serve --data-dir "$data" --http-addr 127.0.0.1:0 --admin-addr 127.0.0.1:0 > "$WORK/cocon.log" 2>/dev/null &
    pid=$!
    PIDS+=("$pid")
    until grep -q ' ready ' "$WORK/cocon.log"; do sleep 0.05; done
    http=$(sed -n 's/.*http=\([^ ]*\).*/\1/p' "$WORK/cocon.log")
    admin=$(sed -n 's/.*admin=\([^ ]*\).*/\1/p' "$WORK/cocon.log")
    export COCON_ADMIN_TOKEN; COCON_ADMIN_TOKEN=$(cat "$data/admin-token")
    "$bin" instances add bench.localhost --admin "http://$admin" > /dev/null 2>&1
    # The `file` kind's token also opens the drive; the others keep the one rule they always had.
    scopes=(io.cozy.bench)
    if [ "$KIND" = file ]; then scopes+=(io.cozy.files); fi
    token=$("$bin" instances token-cli bench.localhost "${scopes[@]}" --admin "http://$admin" 2>/dev/null)
    H=(-H "Host: bench.localhost" -H "Authorization: Bearer $token")
    curl -sf "${H[@]}" -X PUT "http://$http/data/io.cozy.bench/read-me" -d '{"title":"bench"}' > /dev/null
    if [ "$KIND" = file ]; then
      file=$(curl -sf "${H[@]}" -X POST -H 'Content-Type: text/plain' --data-binary 'some text' \
        "http://$http/files/io.cozy.files.root-dir?Type=file&Name=read-me.txt" \
        | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["id"])')
    fi
    case $KIND in
      get) echo "round $round $bin: $(measure "$pid" "${H[@]}" "http://$http/data/io.cozy.bench/read-me")" ;;
      post) echo "round $round $bin: $(measure "$pid" "${H[@]}" -s "$WORK/post.lua" "http://$http/data/io.cozy.bench/")" ;;
      file) echo "round $round $bin: $(measure "$pid" "${H[@]}" "http://$http/files/$file")" ;;
      post-tail) echo "round $round $bin: $(tail_latency "${H[@]}" "http://$http/data/io.cozy.bench/")" ;;
      *) echo "unknown request type $KIND: use get, post, file or post-tail" >&2; exit 2 ;;
    esac
    kill "$pid"; wait "$pid" 2>/dev/null || true
  done
done
