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

cannot_install() {
    echo "setup.sh: cannot install the openai package: $*" >&2
    exit 3
}

installed() {
    [ -x "$venv/bin/python" ] && "$venv/bin/python" - "$OPENAI_VERSION" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version
sys.exit(0 if version("openai") == sys.argv[1] else 1)
PY
}

if ! installed; then
    command -v python3 >/dev/null || cannot_install "python3 not found"
    if [ ! -x "$venv/bin/python" ]; then
        mkdir -p "$(dirname "$venv")"
        python3 -m venv "$venv" >&2 || cannot_install "python3 -m venv $venv failed"
    fi
    "$venv/bin/python" -m pip --disable-pip-version-check --no-input -q install "openai==$OPENAI_VERSION" >&2 \
        || cannot_install "pip install openai==$OPENAI_VERSION failed (PyPI unreachable?)"
    installed || cannot_install "installed but not importable in $venv"
fi
echo "$venv/bin/python"
