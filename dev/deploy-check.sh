#!/usr/bin/env bash
# The deploy guide's offline commands, as docs/deploying.md has them (its blocks marked
# `offline`, read by dev/guide.py): make venv, sam build, cfn-lint on the template SAM
# packaged. Offline: cargo-lambda builds from the local registry cache, SAM contacts nothing.
# Without the aarch64 Rust target, x86_64 stands in for arm64 (the same build, other CPU).
# Part of `make test` (dev/test.sh); it takes minutes (two release builds with LTO).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
# shellcheck source=dev/aws-env.sh
. "$repo/dev/aws-env.sh"
# shellcheck source=dev/sam-offline.sh
. "$repo/dev/sam-offline.sh"
export PATH="$repo/.venv/bin:$PATH"

arch=arm64
if ! rustup target list --installed 2>/dev/null | grep -qx aarch64-unknown-linux-gnu; then
  arch=x86_64
  echo "dev/deploy-check.sh: no aarch64-unknown-linux-gnu target here: Architecture=x86_64 stands in for arm64"
fi
script="$("$repo/dev/guide.py" offline --arch "$arch")"
started=$SECONDS
bash -euxo pipefail -c "$script"
echo "dev/deploy-check.sh: the guide's offline commands passed in $((SECONDS - started)) s"
