#!/usr/bin/env bash
# The project's test command (`make test`, run by CI): venv, template checks, all Rust tests.
# Everything runs offline against loopback: moto on 127.0.0.1, fakes of Langfuse and Stripe.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

trap 'status=$?; if [ $status -ne 0 ]; then echo "dev/test.sh: FAILED (exit $status)"; fi' EXIT

"$repo/dev/venv.sh"
# shellcheck source=dev/aws-env.sh
. "$repo/dev/aws-env.sh"

"$repo/dev/validate.sh"

echo "+ dev/shape.py (product files <= 500 lines, functions <= 80)"
"$repo/dev/shape.py"

# cargo test includes the conformance checks (docs/conformance.md): tracemeter's requests
# against the official SDKs' golden requests, and dev/sdk_check.py with the venv's SDKs.
echo "+ cargo test --workspace"
cargo test --workspace

echo "+ dev/chaos.sh (the reliability suite: ${CHAOS_TRACES:-300} traces, faults at every boundary, invariants)"
"$repo/dev/chaos.sh"

echo "+ dev/lambda-check.sh (cargo lambda watch + invoke of both functions on the local stack)"
"$repo/dev/lambda-check.sh"

echo "+ dev/deploy-check.sh (docs/deploying.md's offline commands: sam build, cfn-lint of the packaged template)"
"$repo/dev/deploy-check.sh"

echo "dev/test.sh: all checks passed (cfn-lint, sam validate --lint, cargo test --workspace, the reliability suite, cargo lambda invoke, the deploy guide's offline commands)"
