"""The GPU bench (bench/gpu) on the CPU: its `--smoke` mode runs the same checks and model harness on
the tiny config under the Triton interpreter, so the device call cannot break unseen; and the
roofline arithmetic it reports."""
from __future__ import annotations

import _triton_interp  # noqa: F401  (must precede the kernel import)
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench.gpu.common import ModelBytes, decode_bytes, prefill_cost, touched_fraction  # noqa: E402
from bench.gpu.main import main  # noqa: E402


def test_roofline_arithmetic() -> None:
    assert touched_fraction(1, 512, 10) == pytest.approx(10 / 512)
    assert touched_fraction(64, 512, 10) == pytest.approx(1 - (502 / 512) ** 64)
    m = ModelBytes(dense=100, experts=5120, num_experts=512, top_k=10, embed_row=4, state_per_seq=7,
                   kv_per_token=3, active_params=50)
    assert decode_bytes(m, 1, 10) == pytest.approx(100 + 100 + 4 + 2 * 7 + 30)
    nbytes, flops = prefill_cost(m, 8)
    assert flops == 2 * 50 * 8 and nbytes > m.dense


def test_smoke_run_writes_the_report(tmp_path: Path) -> None:
    assert main(["--smoke", "--out", str(tmp_path)]) == 0
    (report,) = tmp_path.glob("gpu-*.md")
    text = report.read_text()
    assert "Correctness (all passed)" in text and "| 2 |" in text and "Prefill" in text
