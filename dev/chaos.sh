#!/usr/bin/env bash
# The reliability suite: the whole pipeline on the local stack with faults injected at every
# boundary (Langfuse, Stripe, AWS, the process handler), then the invariants. Bounded: part
# of `make test` with the defaults below; `make soak` runs it long (dev/soak.sh).
#   CHAOS_TRACES (300)  CHAOS_RATE (0.1)  CHAOS_SEED (42)  CHAOS_POLLERS (4)  CHAOS_MINUTES (15)
#   STRIPE_API_MODE (unset: the v2 stream, the default, then v1)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
"$repo/dev/venv.sh" >/dev/null
# shellcheck source=dev/aws-env.sh
. "$repo/dev/aws-env.sh"
export CHAOS_TRACES="${CHAOS_TRACES:-300}" CHAOS_RATE="${CHAOS_RATE:-0.1}"
if [ -n "${STRIPE_API_MODE:-}" ]; then
  exec cargo run -q -p tracemeter-local --bin tracemeter-chaos
fi
# The default (the v2 stream) sends a batch's events in one request, so a run of 300 traces
# meets few Stripe faults; v1 sends one request per event and meets ~10 % of them. Both run.
STRIPE_API_MODE=v2_stream cargo run -q -p tracemeter-local --bin tracemeter-chaos
STRIPE_API_MODE=v1 cargo run -q -p tracemeter-local --bin tracemeter-chaos
