#!/usr/bin/env bash
# Install the official `openai` Python package (pinned) into a venv for the SDK test.
#
#   scripts/openai-sdk/setup.sh      # prints the venv's python path on stdout
#
# Exit codes: 3 = cannot install (no python3/venv, PyPI unreachable); other non-zero = broken.
# Environment: BATCHLING_SDK_VENV  venv to create or reuse (default <repo>/target/openai-sdk/venv)
set -euo pipefail

OPENAI_VERSION=3.57.0

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
venv=${BATCHLING_SDK_VENV:-$repo/target/openai-sdk/venv}

# shellcheck source=../lib/pinned-venv.sh
. "$repo/scripts/lib/pinned-venv.sh"
ensure_venv "the openai package" "$venv" "openai==$OPENAI_VERSION"
echo "$venv/bin/python"
