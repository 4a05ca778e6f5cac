# shellcheck shell=bash
# Source this file: it makes every AWS SDK or CLI started from this shell talk to nothing but
# loopback. Dummy credentials and a region mean no SDK looks for credentials on the EC2
# metadata address (which is also disabled); profiles and config files are not read; and
# AWS_ENDPOINT_URL points at a closed loopback port (127.0.0.1:9, discard) unless it already
# points at loopback, so nothing can reach AWS by accident. Tests build their own SDK config
# for their moto port.
export AWS_EC2_METADATA_DISABLED=true
export AWS_ACCESS_KEY_ID=testing
export AWS_SECRET_ACCESS_KEY=testing
unset AWS_SESSION_TOKEN AWS_PROFILE AWS_DEFAULT_PROFILE
export AWS_REGION=us-east-1
export AWS_DEFAULT_REGION=us-east-1
export AWS_CONFIG_FILE=/dev/null
export AWS_SHARED_CREDENTIALS_FILE=/dev/null
case "${AWS_ENDPOINT_URL:-}" in
  http://127.0.0.1:*|http://localhost:*) ;;
  *) export AWS_ENDPOINT_URL=http://127.0.0.1:9 ;;
esac
# SAM CLI: no telemetry, and no weekly "newer version?" request to PyPI (its state lives in
# the venv, where the check is marked as done far in the future; see dev/validate.sh).
export SAM_CLI_TELEMETRY=0
