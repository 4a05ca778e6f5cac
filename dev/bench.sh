#!/usr/bin/env bash
# `make bench`: builds the release bootstraps of both functions (cargo lambda, x86_64 here:
# they run on this machine; arm64 where the target is installed is what deploys) and runs the
# benchmark: the real bootstraps under a Lambda Runtime API emulator, moto behind a counting
# proxy, the Langfuse and Stripe fakes. Settings (environment): TRACES (1000),
# LANGFUSE_LATENCY_MS (20), LANGFUSE_RPM (1000), CONCURRENCY (5), TIME_LIMIT_SECONDS (1200),
# LANGFUSE_API (v2), BENCH_ENV ("NAME=value,..." extra function variables), INGEST_ONLY=1
# (ingest alone: its memory at TRACES=10000 / 40000).
# SCENARIO=day: a simulated day of 5-minute ingest ticks (the handlers in process, the clock
# moved tick by tick) for the steady-state cost; DAY_TRACES (5000 a day), LATE_EVERY (10).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
"$repo/dev/venv.sh"
if [ "${SCENARIO:-}" != "day" ]; then
  "$repo/dev/lambda.sh" build x86_64
fi
# shellcheck source=dev/aws-env.sh
. "$repo/dev/aws-env.sh"
export RUST_LOG="${RUST_LOG:-error}"
cargo build --quiet -p tracemeter-local --bin tracemeter-bench
exec "$repo/target/debug/tracemeter-bench"
