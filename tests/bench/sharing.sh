#!/usr/bin/env bash
# Sharing figures between two release `cocon serve` hosts on loopback: the propagation of an
# edit from one host to the other, an initial sync of documents and the owner's writes while
# the other host is down (sharing_bench), and the
# initial sync of a shared folder against the direct upload of its files (sharing_files_bench),
# and one owner sharing 1,000 notes with 20 recipients' instances (sharing_fanout_bench).
#   bash tests/bench/sharing.sh 500 10000 60 10000 100000 20 1000 500
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release -q -p cocon -p cocon-tests --bin cocon --bin sharing_bench --bin sharing_files_bench --bin sharing_fanout_bench
export COCON_BIN="$PWD/target/release/cocon" RUST_LOG=error
target/release/sharing_bench "${1:-500}" "${2:-10000}" "${3:-60}"
target/release/sharing_files_bench "${4:-10000}" "${5:-100000}"
target/release/sharing_fanout_bench "${6:-20}" "${7:-1000}" "${8:-500}"
