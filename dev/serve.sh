#!/usr/bin/env bash
# `make serve`: keeps the local stack up (moto on 127.0.0.1, Langfuse and Stripe fakes, the
# resources of template.yaml, the traces the events/ fixtures name) and writes the functions'
# environment to .local/functions.env, for `make watch` / `make invoke` in other terminals.
# Stop it with Ctrl-C: it prints what the Stripe fake received and stops everything.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
"$repo/dev/venv.sh"
# shellcheck source=dev/aws-env.sh
. "$repo/dev/aws-env.sh"
export RUST_LOG="${RUST_LOG:-warn}"
cargo build --quiet -p tracemeter-local --bin tracemeter-local
exec "$repo/target/debug/tracemeter-local" serve "${ENV_FILE:-$repo/.local/functions.env}"
