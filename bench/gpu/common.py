"""Shared by the GPU bench: device timing, error measure, and the roofline arithmetic.

Roofline (METHOD.md's "two numbers"): a step's floor is max(bytes it must move / measured copy
bandwidth, FLOPs / measured bf16 matmul rate). For a decode step of B sequences at context L of
Qwen3-Next the bytes are: every non-expert weight once (the embedding table: B rows), the routed
experts actually touched (with uniform routing E·(1 − (1 − k/E)^B) of E per layer), each sequence's
GDN state read and written (fp32) and its KV read. Prefill adds nothing to this but more FLOPs.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch


def rel_err(y: torch.Tensor, ref: torch.Tensor) -> float:
    """‖y − ref‖ / ‖ref‖ in float32 (NaN stays NaN and fails every bound)."""
    y32, r32 = y.float(), ref.float()
    return float((y32 - r32).norm() / r32.norm().clamp_min(1e-12))


def time_ms(fn: Callable[[], object], *, warmup: int = 3, iters: int = 20) -> float:
    """Median wall time of `fn` in ms: CUDA events on a GPU, a synchronised host clock elsewhere."""
    for _ in range(warmup):
        fn()
    cuda = torch.cuda.is_available()
    times = []
    for _ in range(iters):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


@dataclass(frozen=True)
class Ceilings:
    """Measured on the device: copy bandwidth (bytes read + written per second) and bf16 matmul rate."""

    bandwidth: float  # bytes/s
    flops: float  # FLOP/s

    def floor_s(self, nbytes: float, flops: float) -> float:
        return max(nbytes / self.bandwidth, flops / self.flops)


def measure_ceilings(device: torch.device, *, copy_bytes: int = 2 << 30, n: int = 8192) -> Ceilings:
    """One large device copy and one n³ bf16 matmul on random data (never zeros)."""
    src = torch.randn(copy_bytes // 4, device=device)
    dst = torch.empty_like(src)
    t_copy = time_ms(lambda: dst.copy_(src), iters=10) / 1e3
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    t_mm = time_ms(lambda: a @ b, iters=10) / 1e3
    del src, dst
    return Ceilings(bandwidth=2 * copy_bytes / t_copy, flops=2 * n ** 3 / t_mm)


@dataclass(frozen=True)
class ModelBytes:
    """Byte inventory of a built model (from its tensors; see bench/gpu/model_bench.py)."""

    dense: int  # every weight read once per step whatever the batch (no experts, no embedding table)
    experts: int  # routed experts of all layers
    num_experts: int
    top_k: int
    embed_row: int  # bytes of one embedding row
    state_per_seq: int  # GDN conv + recurrent state of one sequence (all layers)
    kv_per_token: int  # KV bytes per token of context (all attention layers)
    active_params: int  # parameters a token multiplies by (for FLOPs: 2 per parameter)


def touched_fraction(batch: int, num_experts: int, top_k: int) -> float:
    """Expected fraction of experts a batch of `batch` tokens routes to, under uniform routing."""
    return 1 - (1 - top_k / num_experts) ** batch


def decode_bytes(m: ModelBytes, batch: int, context: int) -> float:
    """Bytes one decode step of `batch` sequences at `context` tokens must move (see module doc)."""
    weights = m.dense + m.experts * touched_fraction(batch, m.num_experts, m.top_k) + batch * m.embed_row
    return weights + batch * (2 * m.state_per_seq + context * m.kv_per_token)


def prefill_cost(m: ModelBytes, tokens: int) -> tuple[float, float]:
    """(bytes, FLOPs) of prefilling one sequence of `tokens` tokens (attention FLOPs left out)."""
    nbytes = m.dense + m.experts * touched_fraction(tokens, m.num_experts, m.top_k) + tokens * m.embed_row
    nbytes += m.state_per_seq + tokens * m.kv_per_token
    return nbytes, 2.0 * m.active_params * tokens
