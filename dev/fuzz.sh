#!/usr/bin/env bash
# Fuzzes the Langfuse response parsers (fuzz/fuzz_targets/langfuse_parsers.rs) for
# FUZZ_SECONDS (default 60) with libFuzzer via cargo-fuzz on the nightly toolchain. New
# corpus entries go to fuzz/corpus/ (ignored by git); the seeds are fuzz/seeds/.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo/fuzz"
if ! rustup toolchain list | grep -q '^nightly'; then
    echo "dev/fuzz.sh: the nightly toolchain is needed: rustup toolchain install nightly" >&2
    exit 2
fi
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
mkdir -p corpus/langfuse_parsers
log="$repo/target/fuzz.log"
echo "+ cargo +nightly fuzz run langfuse_parsers (${FUZZ_SECONDS:-60} s, log: $log)"
mkdir -p "$repo/target"
status=0
cargo +nightly fuzz run langfuse_parsers corpus/langfuse_parsers seeds/langfuse_parsers -- \
    -max_total_time="${FUZZ_SECONDS:-60}" -max_len=65536 -print_final_stats=1 >"$log" 2>&1 || status=$?
grep -E '^(#[0-9]+ +DONE|stat::number_of_executed_units|stat::peak_rss|Done [0-9]+ runs|SUMMARY|==[0-9]+==)' "$log" || true
if [ "$status" -ne 0 ]; then
    tail -40 "$log"
    echo "dev/fuzz.sh: the fuzz target failed (exit $status); the crashing input is under fuzz/artifacts/" >&2
    exit "$status"
fi
echo "dev/fuzz.sh: no crash in ${FUZZ_SECONDS:-60} s (log: $log)"
