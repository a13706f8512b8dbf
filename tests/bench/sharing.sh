#!/usr/bin/env bash
# Sharing figures between two release `cocon serve` hosts on loopback (sharing_bench): the
# propagation of an edit from one host to the other, and an initial sync.
#   bash tests/bench/sharing.sh 500 10000
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release -q -p cocon -p cocon-tests --bin cocon --bin sharing_bench
COCON_BIN="$PWD/target/release/cocon" RUST_LOG=error target/release/sharing_bench "${1:-500}" "${2:-10000}"
