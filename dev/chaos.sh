#!/usr/bin/env bash
# The reliability suite: the whole pipeline on the local stack with faults injected at every
# boundary (Langfuse, Stripe, AWS, the process handler), then the invariants. Bounded: part
# of `make test` with the defaults below; `make soak` runs it long (dev/soak.sh).
#   CHAOS_TRACES (300)  CHAOS_RATE (0.1)  CHAOS_SEED (42)  CHAOS_POLLERS (4)  CHAOS_MINUTES (15)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
"$repo/dev/venv.sh" >/dev/null
# shellcheck source=dev/aws-env.sh
. "$repo/dev/aws-env.sh"
export CHAOS_TRACES="${CHAOS_TRACES:-300}" CHAOS_RATE="${CHAOS_RATE:-0.1}"
exec cargo run -q -p tracemeter-local --bin tracemeter-chaos
