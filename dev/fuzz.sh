#!/usr/bin/env bash
# Fuzzes, for FUZZ_SECONDS each (default 60), with libFuzzer via cargo-fuzz on the nightly
# toolchain: the Langfuse response parsers (fuzz/fuzz_targets/langfuse_parsers.rs) and the
# operator command's argument parsers (fuzz/fuzz_targets/cli_parsers.rs). FUZZ_TARGETS picks
# some. New corpus entries go to fuzz/corpus/<target>/ (ignored by git); the seeds are
# fuzz/seeds/<target>/. The same parsers are property-tested in `make test`.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo/fuzz"
if ! rustup toolchain list | grep -q '^nightly'; then
    echo "dev/fuzz.sh: the nightly toolchain is needed: rustup toolchain install nightly" >&2
    exit 2
fi
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
mkdir -p "$repo/target"
for target in ${FUZZ_TARGETS:-langfuse_parsers cli_parsers}; do
    mkdir -p "corpus/$target"
    log="$repo/target/fuzz-$target.log"
    echo "+ cargo +nightly fuzz run $target (${FUZZ_SECONDS:-60} s, log: $log)"
    status=0
    cargo +nightly fuzz run "$target" "corpus/$target" "seeds/$target" -- \
        -max_total_time="${FUZZ_SECONDS:-60}" -max_len=65536 -print_final_stats=1 >"$log" 2>&1 || status=$?
    grep -E '^(#[0-9]+ +DONE|stat::number_of_executed_units|stat::peak_rss|Done [0-9]+ runs|SUMMARY|==[0-9]+==)' "$log" || true
    if [ "$status" -ne 0 ]; then
        tail -40 "$log"
        echo "dev/fuzz.sh: $target failed (exit $status); the crashing input is under fuzz/artifacts/$target/" >&2
        exit "$status"
    fi
    echo "dev/fuzz.sh: $target: no crash in ${FUZZ_SECONDS:-60} s (log: $log)"
done
