#!/usr/bin/env bash
# Lints template.yaml with cfn-lint and `sam validate --lint`, offline.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
"$repo/dev/venv.sh"
# shellcheck source=dev/aws-env.sh
. "$repo/dev/aws-env.sh"

# shellcheck source=dev/sam-offline.sh
. "$repo/dev/sam-offline.sh"

echo "+ cfn-lint template.yaml"
"$repo/.venv/bin/cfn-lint" template.yaml
echo "+ sam validate --lint"
"$repo/.venv/bin/sam" validate --lint --template-file template.yaml --region us-east-1
