#!/usr/bin/env bash
# The functions as Lambda runs them, with cargo-lambda (from the project venv, zig as linker)
# and the SAM CLI:
#   dev/lambda.sh build ARCH        cargo lambda build --release (arm64 | x86_64)
#   dev/lambda.sh watch             cargo lambda watch on 127.0.0.1:${WATCH_PORT:-9000}, with the
#                                   environment `make serve` wrote to .local/functions.env
#   dev/lambda.sh invoke FN EVENT   cargo lambda invoke FN --data-file EVENT (against watch)
#   dev/lambda.sh sam-build ARCH    sam build --parameter-overrides Architecture=ARCH
#   dev/lambda.sh deploy ARCH       sam build + sam deploy --guided (real AWS credentials)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
export PATH="$repo/.venv/bin:$PATH"
export __SAM_CLI_APP_DIR="$repo/.venv/sam-cli" SAM_CLI_TELEMETRY=0
env_file="${ENV_FILE:-$repo/.local/functions.env}"
port="${WATCH_PORT:-9000}"

need_arch() {
  case "$1" in
    arm64)
      rustup target list --installed 2>/dev/null | grep -qx aarch64-unknown-linux-gnu || {
        echo "the Rust target aarch64-unknown-linux-gnu is not installed: run" \
             "'rustup target add aarch64-unknown-linux-gnu', or build for this machine with ARCH=x86_64" >&2
        exit 1
      }
      echo "--arm64";;
    x86_64) echo "--x86-64";;
    *) echo "ARCH must be arm64 or x86_64, not '$1'" >&2; exit 1;;
  esac
}

cmd="${1:-}"
shift || true
case "$cmd" in
  build)
    flag="$(need_arch "${1:-arm64}")"
    # shellcheck source=dev/aws-env.sh
    . "$repo/dev/aws-env.sh"
    cargo lambda build --release "$flag" -p ingest -p process
    ls -l target/lambda/*/bootstrap;;
  watch)
    [ -s "$env_file" ] || { echo "no $env_file: start the local stack first with 'make serve'" >&2; exit 1; }
    # shellcheck source=dev/aws-env.sh
    . "$repo/dev/aws-env.sh"
    exec cargo lambda watch -A 127.0.0.1 -P "$port" --env-file "$env_file";;
  invoke)
    fn="${1:?usage: dev/lambda.sh invoke FN EVENT}"
    event="${2:?usage: dev/lambda.sh invoke FN EVENT}"
    exec cargo lambda invoke "$fn" -A 127.0.0.1 -P "$port" --data-file "$event";;
  sam-build)
    need_arch "${1:-arm64}" > /dev/null
    # shellcheck source=dev/aws-env.sh
    . "$repo/dev/aws-env.sh"
    exec sam build --parameter-overrides "Architecture=${1:-arm64}";;
  deploy)
    need_arch "${1:-arm64}" > /dev/null
    sam build --parameter-overrides "Architecture=${1:-arm64}"
    # Real AWS: the caller's own credentials and region, not the loopback-only environment.
    exec sam deploy --guided --parameter-overrides "Architecture=${1:-arm64}";;
  *)
    echo "usage: dev/lambda.sh build ARCH | watch | invoke FN EVENT | sam-build ARCH | deploy ARCH" >&2
    exit 2;;
esac
