#!/usr/bin/env bash
# Proves the functions run as Lambda runs them, with cargo-lambda, against the local stack:
# starts `tracemeter-local serve` (moto + fakes + seeded traces), `cargo lambda watch` on
# 127.0.0.1 with the stack's environment, then `cargo lambda invoke`s
#   ingest  with events/scheduled.json  -> it must find and enqueue the two seeded traces;
#   process with events/sqs-batch.json  -> no batch item failures;
#   process with events/sqs-poison.json -> acknowledged (no batch item failures);
# and checks that the Stripe fake received the two meter events. Stops everything by PID.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
"$repo/dev/venv.sh"
# shellcheck source=dev/aws-env.sh
. "$repo/dev/aws-env.sh"
export PATH="$repo/.venv/bin:$PATH"
work="${LAMBDA_CHECK_DIR:-$(mktemp -d)}"; mkdir -p "$work"
env_file="$work/functions.env"
serve_pid=""
watch_pid=""
cleanup() {
  [ -n "$watch_pid" ] && kill -- "-$watch_pid" 2>/dev/null || true
  [ -n "$serve_pid" ] && kill "$serve_pid" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup EXIT

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

echo "+ building the function binaries and the local runner"
cargo build --quiet --workspace --bins
RUST_LOG=warn "$repo/target/debug/tracemeter-local" serve "$env_file" > "$work/serve.log" 2>&1 &
serve_pid=$!
for _ in $(seq 1 120); do
  [ -s "$env_file" ] && break
  kill -0 "$serve_pid" 2>/dev/null || { cat "$work/serve.log"; echo "the local stack did not start" >&2; exit 1; }
  sleep 0.5
done
[ -s "$env_file" ] || { cat "$work/serve.log"; echo "the local stack did not start in 60 s" >&2; exit 1; }
head -1 "$work/serve.log"

port="$(free_port)"
echo "+ cargo lambda watch -A 127.0.0.1 -P $port --env-file <stack env>"
# Its own process group, so that cleanup stops the function processes it starts too.
setsid cargo lambda watch -A 127.0.0.1 -P "$port" --env-file "$env_file" --ignore-changes \
  > "$work/watch.log" 2>&1 &
watch_pid=$!
for _ in $(seq 1 240); do
  (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  kill -0 "$watch_pid" 2>/dev/null || { cat "$work/watch.log"; echo "cargo lambda watch exited" >&2; exit 1; }
  sleep 0.5
done

invoke() {
  local fn="$1" event="$2"
  echo "+ cargo lambda invoke $fn --data-file $event" >&2
  cargo lambda invoke "$fn" -A 127.0.0.1 -P "$port" --data-file "$event" --output-format json
}

ingest_out="$(invoke ingest events/scheduled.json)"
echo "  $ingest_out"
python3 - "$ingest_out" <<'PY'
import json, sys
s = json.loads(sys.argv[1])
assert s["outcome"] == "completed", s
assert s["enqueued"] == 2, f"expected the 2 seeded traces enqueued: {s}"
PY

batch_out="$(invoke process events/sqs-batch.json)"
echo "  $batch_out"
poison_out="$(invoke process events/sqs-poison.json)"
echo "  $poison_out"
python3 - "$batch_out" "$poison_out" <<'PY'
import json, sys
for raw in sys.argv[1:]:
    r = json.loads(raw)
    assert r.get("batchItemFailures") == [], r
PY

kill "$serve_pid"
wait "$serve_pid" || true
serve_pid=""
received="$(grep 'stripe fake received' "$work/serve.log" || true)"
echo "  $received"
case "$received" in
  *"received 2 meter events"*) echo "lambda-check: ok (ingest and process invoked through cargo lambda)";;
  *) cat "$work/serve.log" "$work/watch.log" >&2; echo "lambda-check: the Stripe fake did not receive the 2 meter events" >&2; exit 1;;
esac
