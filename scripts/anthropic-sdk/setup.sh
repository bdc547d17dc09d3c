#!/usr/bin/env bash
# Install the official `anthropic` and `openai` Python packages (pinned) into a venv for the
# translation check (`crates/batchling-providers/tests/anthropic_translate.rs`).
#
#   scripts/anthropic-sdk/setup.sh      # prints the venv's python path on stdout
#
# Exit codes: 3 = cannot install (no python3/venv, PyPI unreachable); other non-zero = broken.
# Environment: BATCHLING_ANTHROPIC_SDK_VENV  venv to create or reuse
#              (default <repo>/target/anthropic-sdk/venv)
set -euo pipefail

ANTHROPIC_VERSION=2.10.0
# The same openai as scripts/openai-sdk/setup.sh.
OPENAI_VERSION=3.57.0

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
venv=${BATCHLING_ANTHROPIC_SDK_VENV:-$repo/target/anthropic-sdk/venv}

# shellcheck source=../lib/pinned-venv.sh
. "$repo/scripts/lib/pinned-venv.sh"
ensure_venv "the anthropic and openai packages" "$venv" \
    "anthropic==$ANTHROPIC_VERSION" "openai==$OPENAI_VERSION"
echo "$venv/bin/python"
