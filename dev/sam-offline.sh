# Sourced: the SAM CLI offline. It keeps its settings in a directory of the venv: telemetry
# off, and the weekly PyPI version check marked as done until 2100, so sam contacts nothing.
export __SAM_CLI_APP_DIR="$repo/.venv/sam-cli" SAM_CLI_TELEMETRY=0
mkdir -p "$__SAM_CLI_APP_DIR"
cat > "$__SAM_CLI_APP_DIR/metadata.json" <<'JSON'
{"telemetryEnabled": false, "lastVersionCheck": 4102444800.0, "installationId": "tracemeter-offline"}
JSON
