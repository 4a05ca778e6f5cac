#!/usr/bin/env bash
# The process function's CPU profile at the template's defaults: runs `make bench` for one
# Stripe mode (STRIPE_API_MODE, default v2_stream) with `perf record` attached to the process
# bootstraps while they drain the queue, then prints where their time went by share: kernel
# or user space, the shared objects, the top symbols (the release bootstraps are stripped,
# so their own code is one `bootstrap` entry; the kernel's and libc's symbols are named).
# Needs `perf` (linux-perf) and permission to profile the bench's processes.
# PERF_NO_BUILD=1 profiles target/lambda/process/bootstrap as it is, without building.
# Output: target/perf/process.data and the report on stdout.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
command -v perf >/dev/null || { echo "dev/perf.sh: perf is not installed (apt-get install linux-perf)" >&2; exit 2; }
out="$repo/target/perf"
mkdir -p "$out"
export STRIPE_API_MODE="${STRIPE_API_MODE:-v2_stream}"
bootstrap="$repo/target/lambda/process/bootstrap"

if [ -n "${PERF_NO_BUILD:-}" ]; then
  # Profile the bootstraps as they are (e.g. an older build copied in place).
  # shellcheck source=dev/aws-env.sh
  (. "$repo/dev/aws-env.sh" && RUST_LOG="${RUST_LOG:-error}" "$repo/target/debug/tracemeter-bench") >"$out/bench.log" 2>&1 &
else
  make bench >"$out/bench.log" 2>&1 &
fi
bench=$!
# The instances start once ingest has run; wait for all of them (CONCURRENCY, 5).
want="${CONCURRENCY:-5}"
for _ in $(seq 1 6000); do
  pids=$(pgrep -f -x "$bootstrap" | paste -sd, || true)
  [ -n "$pids" ] && [ "$(echo "$pids" | tr ',' '\n' | wc -l)" -ge "$want" ] && break
  kill -0 "$bench" 2>/dev/null || break
  sleep 0.1
done
if [ -z "${pids:-}" ]; then
  wait "$bench" || true
  echo "dev/perf.sh: no process bootstrap to profile; see $out/bench.log" >&2
  exit 1
fi
perf record -q -F 997 -g -p "$pids" -o "$out/process.data" 2>/dev/null &
recorder=$!
wait "$bench"
wait "$recorder" || true
grep -E "^process:|^\| |^traces" "$out/bench.log" || true
echo "--- the process bootstraps' samples by shared object (bootstrap: tracemeter's code and its crates)"
perf report -i "$out/process.data" --stdio --no-children -g none --sort dso 2>/dev/null | grep -E "^ +[0-9]" | head -8 || true
echo "--- top symbols"
perf report -i "$out/process.data" --stdio --no-children -g none --sort dso,sym 2>/dev/null | grep -E "^ +[0-9]" | head -15 || true
