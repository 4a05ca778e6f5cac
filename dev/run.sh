#!/usr/bin/env bash
# `make run`: the whole pipeline on the local stack with a sample workload, then a billing
# summary. Offline: moto on 127.0.0.1 (project venv), in-process Langfuse and Stripe fakes.
# TRACES=N changes the workload size (default 250, about half a minute after the build; the
# budget limits grow with it). With LANGFUSE_BASE_URL (+ keys) or a
# test-mode STRIPE_SECRET_KEY (+ STRIPE_METER_EVENT_NAME) set, that real service replaces its fake.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
"$repo/dev/venv.sh"
# shellcheck source=dev/aws-env.sh
. "$repo/dev/aws-env.sh"
export RUST_LOG="${RUST_LOG:-error}"
echo "+ cargo run -p tracemeter-local --bin tracemeter-local" >&2
cargo run --quiet -p tracemeter-local --bin tracemeter-local
