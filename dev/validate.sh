#!/usr/bin/env bash
# Lints template.yaml with cfn-lint and `sam validate --lint`, offline.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
"$repo/dev/venv.sh"
# shellcheck source=dev/aws-env.sh
. "$repo/dev/aws-env.sh"

# SAM CLI keeps its settings in a directory of the venv: telemetry off, and the weekly PyPI
# version check marked as done until 2100, so `sam validate` contacts nothing.
export __SAM_CLI_APP_DIR="$repo/.venv/sam-cli"
mkdir -p "$__SAM_CLI_APP_DIR"
cat > "$__SAM_CLI_APP_DIR/metadata.json" <<'JSON'
{"telemetryEnabled": false, "lastVersionCheck": 4102444800.0, "installationId": "tracemeter-offline"}
JSON

echo "+ cfn-lint template.yaml"
"$repo/.venv/bin/cfn-lint" template.yaml
echo "+ sam validate --lint"
"$repo/.venv/bin/sam" validate --lint --template-file template.yaml --region us-east-1
