#!/usr/bin/env bash
# The long fuzz runs: every property-based target for SECS seconds each (600 by default), on a
# release build, two at a time (one per core). Each prints how many cases it ran; a failure
# prints the minimal input and the seed to replay it (COCON_FUZZ_SEED=…).
#   bash tests/fuzz/run.sh          # 10 minutes per target
#   bash tests/fuzz/run.sh 60       # a quick pass
set -euo pipefail
cd "$(dirname "$0")/../.."
SECS="${1:-600}"
targets=(
  "cocon-common mango::fuzz_tests::fuzz_mango_selectors"
  "cocon-common scope::fuzz_tests::fuzz_scope_grammar"
  "cocon-documents body::tests::fuzz_body_compactor"
  "cocon-gateway files::tests::fuzz_range_headers"
  "cocon-gateway tus::fuzz_tests::fuzz_tus_headers"
  "cocon-gateway webdav::tests::fuzz_webdav_xml_bodies"
)
cargo test --release --lib -p cocon-common -p cocon-documents -p cocon-gateway --no-run
run() {
  local crate=$1 test=$2
  COCON_FUZZ_SECS="$SECS" cargo test --release --lib -p "$crate" "$test" -- --exact --nocapture 2>&1 \
    | grep -E 'fuzz target|panicked|minimal|replay' || true
}
for ((i = 0; i < ${#targets[@]}; i += 2)); do
  run ${targets[i]} &
  if ((i + 1 < ${#targets[@]})); then run ${targets[i + 1]} & fi
  wait
done
