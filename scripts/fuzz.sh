#!/usr/bin/env bash
# Fuzz every target for SECONDS each (default 60) with cargo-fuzz (libFuzzer); needs a nightly
# toolchain (`rustup toolchain install nightly`) and `cargo install cargo-fuzz`.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# Seeds come from fuzz/seeds/<target>/ (committed); the growing corpus lives in
# fuzz/corpus/<target>/ (not committed). Crashes land in fuzz/artifacts/<target>/: fix them and
# copy each input to tests/fixtures/fuzz/<target>/, which tests/fuzz_regressions.rs replays.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(gguf safetensors image tokenize)
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t"
  echo "== $t: ${secs}s"
  (cd fuzz && cargo +nightly fuzz run "$t" "corpus/$t" "seeds/$t" -- \
      -max_total_time="$secs" -rss_limit_mb=4096 -max_len=262144 -print_final_stats=1 2>&1) \
    | tee "fuzz/last-$t.log" | grep -E "^(#[0-9]+ +DONE|stat::number_of_executed_units|stat::peak_rss_mb|==[0-9]+== ERROR|SUMMARY|artifact_prefix|Test unit written)" || true
done
