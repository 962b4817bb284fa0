#!/usr/bin/env bash
# One device call, sized for <= 8 minutes: every Triton kernel against its torch reference at the
# Qwen3-Next-80B shapes, then the dummy 80B model (--load-format dummy): decode tok/s at batch 1, 8, 64
# and prefill tok/s at 2k and 8k tokens, each with its roofline ratio.
#
# From the dev machine (device tool; fla-core travels as a wheel, see /work/.library/device/README.md):
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 -d .whl fla-core==0.6.0
#   run(command="bash bench/gpu/run.sh", carry=[".whl"], timeout_s=540)
# Results: $OUT/gpu-<date>.md (copy to docs/benchmarks/), $OUT/gpu-<date>.json, $OUT/log.txt.
# Exit status 1 when a correctness check failed (the report says which).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/awqserve-gpu}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then  # carried wheels (fla-core): the GDN kernels
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
unset TRITON_INTERPRET
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv 2>&1 | tee "$OUT/log.txt"
timeout "${BENCH_TIMEOUT:-450}" python3 -m bench.gpu.main --out "$OUT" "$@" 2>&1 | tee -a "$OUT/log.txt"
