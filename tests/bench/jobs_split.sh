#!/usr/bin/env bash
# Jobs in split mode on a fresh release build, over a real nats-server (JetStream work queues):
#   bash tests/bench/jobs_split.sh 20000 32 [RUNNERS]
# starts nats-server, documents+files, the jobs keeper, the edge (gateway+auth) and RUNNERS
# runner processes (default 0), queues no-op jobs through the public API with jobs_bench, and
# prints JetStream's own acked publish rate on the same server beside it.
set -euo pipefail
cd "$(dirname "$0")/../.."
COUNT=${1:-20000} CONNECTIONS=${2:-32} RUNNERS=${3:-0}
cargo build --release -q -p cocon -p cocon-tests --bin cocon --bin jobs_bench
B=target/release/cocon
D=$(mktemp -d)
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$D"' EXIT
nats-server -js -sd "$D/nats" -a 127.0.0.1 -p 24222 > "$D/nats.log" 2>&1 &
PIDS+=($!)
$B mesh-key "$D/mesh.key" > /dev/null
$B mesh-cert "$D/tls" > /dev/null
export RUST_LOG=warn COCON_MESH_KEY_FILE="$D/mesh.key" COCON_MESH_TLS__DIR="$D/tls"
N=(--nats nats://127.0.0.1:24222)
start() { # NAME SERVICES ADMIN_PORT GRPC_PORT [ENV...]
  local name=$1 services=$2 admin=$3 grpc=$4; shift 4
  env "$@" $B serve --services "$services" "${N[@]}" --data-dir "$D/$name" --http-addr 127.0.0.1:28080 \
    --admin-addr "127.0.0.1:$admin" --grpc-addr "127.0.0.1:$grpc" > "$D/$name.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 100); do grep -q 'cocon ready' "$D/$name.log" 2>/dev/null && return; sleep 0.2; done
  echo "$name did not start:"; cat "$D/$name.log"; exit 1
}
DATA=(COCON_ENDPOINTS__DOCUMENTS=http://127.0.0.1:27071 COCON_ENDPOINTS__FILES=http://127.0.0.1:27071)
start documents documents,files 26071 27071
start keeper jobs 26072 27072 "${DATA[@]}"
KEEPER=${PIDS[-1]}
start edge gateway,auth 26060 27073 "${DATA[@]}" COCON_ENDPOINTS__JOBS=http://127.0.0.1:27072
for i in $(seq "$RUNNERS"); do
  start "runner$i" jobs $((26080 + i)) $((27080 + i)) "${DATA[@]}" COCON_ENDPOINTS__JOBS=http://127.0.0.1:27072 COCON_JOBS__ROLE=runner
done
A=(--admin http://127.0.0.1:26060 --data-dir "$D/edge")
$B instances add bench.localhost "${A[@]}" > /dev/null 2>&1
T=$($B instances token-cli bench.localhost io.cozy.jobs io.cozy.triggers io.cozy.bench "${A[@]}" 2>/dev/null)
target/release/jobs_bench http://127.0.0.1:28080 bench.localhost "$T" throughput "$COUNT" "$CONNECTIONS"
echo "keeper cpu_ticks=$(awk '{print $14+$15}' /proc/$KEEPER/stat) rss_kb=$(ps -o rss= -p $KEEPER)"
target/release/jobs_bench jetstream nats://127.0.0.1:24222 "$COUNT"
