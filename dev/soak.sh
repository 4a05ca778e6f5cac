#!/usr/bin/env bash
# The soak: the fuzz targets (Langfuse and argument parsers), FUZZ_SECONDS each (default 60; nightly
# toolchain, cargo-fuzz is installed if missing), then the reliability suite with
# CHAOS_TRACES (default 20000) traces at CHAOS_RATE (default 0.12, so that every boundary,
# the aborted invocations included, sees at least 10 %) per boundary, within
# CHAOS_MINUTES (default 150), with CHAOS_POLLERS (default 5, the template's
# MaximumConcurrency) and CHAOS_INVOCATION_SECONDS (default 30, the template's function
# timeout; the short default of `make chaos` has every invocation of 100 messages on moto
# run past its deadline, and the redeliveries that follow redo work). Run by hand: `make soak`.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
FUZZ_SECONDS="${FUZZ_SECONDS:-60}" "$repo/dev/fuzz.sh"
export CHAOS_TRACES="${CHAOS_TRACES:-20000}" CHAOS_RATE="${CHAOS_RATE:-0.12}" CHAOS_MINUTES="${CHAOS_MINUTES:-150}" CHAOS_POLLERS="${CHAOS_POLLERS:-5}" CHAOS_INVOCATION_SECONDS="${CHAOS_INVOCATION_SECONDS:-30}"
exec "$repo/dev/chaos.sh"
