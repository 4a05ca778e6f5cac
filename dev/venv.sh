#!/usr/bin/env bash
# Creates <repo>/.venv (python3 -m venv) if missing and installs requirements-dev.txt into it.
# Idempotent and quick: skipped when the stamp matches the requirements and the interpreter.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$repo/.venv"
req="$repo/requirements-dev.txt"
stamp="$venv/.requirements.sha256"
python="${PYTHON:-python3}"

if ! command -v "$python" >/dev/null 2>&1; then
  echo "dev/venv.sh: $python not found; install Python 3.9+ (or set PYTHON=...)" >&2
  exit 1
fi

want="$( { sha256sum "$req" | cut -d' ' -f1; "$python" -c 'import sys; print(sys.version)'; } | sha256sum | cut -d' ' -f1)"
if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi

if [ ! -x "$venv/bin/python" ]; then
  echo "dev/venv.sh: creating $venv"
  "$python" -m venv "$venv"
fi
echo "dev/venv.sh: installing $(basename "$req") into $venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input -r "$req"
echo "$want" > "$stamp"
echo "dev/venv.sh: ready"
