"""Each Triton kernel against its torch reference at the 80B model's real shapes, with timings.

W4A16 Linears (vs tinygemm and dense bf16 cuBLAS, to decide where tinygemm should stay), fused MoE
(512 experts, top-10), paged decode / varlen prefill attention (16 q heads, 2 KV heads, head 256),
and GDN through fla-core when installed (vs the torch forms). Fresh random inputs for every check.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from awqserve.attention.metadata import build_context
from awqserve.attention.torch_backend import TorchPagedAttention
from awqserve.attention.triton_backend import TritonPagedAttention
from awqserve.kernels.moe_align import StackedW4A16, reference_moe
from awqserve.kernels.triton.fused_moe import fused_moe
from awqserve.kernels.triton.w4a16 import w4a16_matmul
from awqserve.kernels.w4a16_layout import dequantize, from_quantized, reference_matmul
from awqserve.quant.base import QuantizedTensor
from bench.gpu.common import rel_err, time_ms

BF16_BOUND = 2e-2  # bf16 operands (METHOD.md: between 1e-3 and 1e-2), with margin for long sums


@dataclass
class Check:
    name: str
    shape: str
    err: float
    bound: float
    ms: float | None = None
    baseline: str = ""

    @property
    def ok(self) -> bool:
        return self.err == self.err and self.err < self.bound  # NaN fails


def _random_qt(n: int, k: int, group: int, symmetric: bool, device: torch.device) -> QuantizedTensor:
    q = torch.randint(-8, 8, (n, k), dtype=torch.int8, device=device)
    s = torch.rand(n, k // group, device=device) * 0.01 + 0.002
    z = None if symmetric else torch.randint(-3, 4, (n, k // group), dtype=torch.int8, device=device)
    return QuantizedTensor(q, s, z, group)


def w4a16_checks(device: torch.device, shapes: dict[str, tuple[int, int]], ms: tuple[int, ...],
                 schemes: tuple[tuple[int, bool], ...], timed: bool) -> list[Check]:
    out = []
    for name, (n, k) in shapes.items():
        for group, sym in schemes:
            qt = _random_qt(n, k, group, sym, device)
            w = from_quantized(qt, torch.bfloat16)
            dense = dequantize(w, torch.bfloat16) if timed else None
            tiny = _tinygemm(qt, device) if timed else None
            for m in ms:
                x = torch.randn(m, k, device=device, dtype=torch.bfloat16)
                err = rel_err(w4a16_matmul(x, w), reference_matmul(x, w))
                c = Check(f"w4a16 {name} g{group} {'sym' if sym else 'asym'}", f"M={m} N={n} K={k}", err, BF16_BOUND)
                if timed:
                    c.ms = time_ms(lambda: w4a16_matmul(x, w))
                    base = [f"bf16 {time_ms(lambda: x @ dense.t()):.3f}",  # type: ignore[union-attr]
                            f"word-per-row loads {time_ms(lambda: w4a16_matmul(x, w, expand_words=False)):.3f}"]
                    if tiny is not None:
                        base.append(f"tinygemm {time_ms(lambda: tiny(x)):.3f}")
                    c.baseline = ", ".join(base) + " ms"
                out.append(c)
    return out


def _tinygemm(qt: QuantizedTensor, device: torch.device):  # type: ignore[no-untyped-def]
    from awqserve.quant.kernels import Int4CudaKernel

    try:
        return Int4CudaKernel(qt, device)
    except (ValueError, RuntimeError):
        return None


def moe_checks(device: torch.device, experts: int, top_k: int, hidden: int, inter: int, group: int,
               tokens: tuple[int, ...], timed: bool) -> list[Check]:
    w13 = StackedW4A16.stack([from_quantized(_random_qt(2 * inter, hidden, group, True, device), torch.bfloat16)
                              for _ in range(experts)])
    w2 = StackedW4A16.stack([from_quantized(_random_qt(hidden, inter, group, True, device), torch.bfloat16)
                             for _ in range(experts)])
    out = []
    for t in tokens:
        x = torch.randn(t, hidden, device=device, dtype=torch.bfloat16)
        logits = torch.randn(t, experts, device=device)
        weights, ids = torch.topk(torch.softmax(logits, -1), top_k, dim=-1)
        weights = weights / weights.sum(-1, keepdim=True)
        err = rel_err(fused_moe(x, ids, weights, w13, w2), reference_moe(x, ids, weights, w13, w2))
        c = Check(f"fused MoE E={experts} top-{top_k} g{group}", f"T={t} H={hidden} I={inter}", err, BF16_BOUND)
        if timed:
            c.ms = time_ms(lambda: fused_moe(x, ids, weights, w13, w2))
        out.append(c)
    return out


def attention_checks(device: torch.device, hq: int, hkv: int, d: int, cases: dict[str, tuple[list[int], list[int]]],
                     timed: bool, block: int = 16) -> list[Check]:
    out = []
    for name, (q_lens, c_lens) in cases.items():
        per_seq = [-(-(q + c) // block) for q, c in zip(q_lens, c_lens)]
        perm = torch.randperm(sum(per_seq) + 1).tolist()
        tables, i = [], 0
        for n in per_seq:
            tables.append(perm[i:i + n])
            i += n
        kv = torch.randn(2, len(perm), block, hkv, d, device=device, dtype=torch.bfloat16)
        t = sum(q_lens)
        q = torch.randn(t, hq, d, device=device, dtype=torch.bfloat16)
        k, v = (torch.randn(t, hkv, d, device=device, dtype=torch.bfloat16) for _ in range(2))
        ctx = build_context(query_lens=q_lens, context_lens=c_lens, block_tables=tables, block_size=block,
                            kv_caches=[kv], device=device)
        ref = TorchPagedAttention().forward(q.float(), k.float(), v.float(), kv.float(), ctx, d ** -0.5)
        triton_attn = TritonPagedAttention()
        got = triton_attn.forward(q, k, v, kv, ctx, d ** -0.5)
        c = Check(f"paged attention {name}", f"B={len(q_lens)} q={max(q_lens)} ctx={max(c_lens)}", rel_err(got, ref),
                  BF16_BOUND)
        if timed:
            c.ms = time_ms(lambda: triton_attn.forward(q, k, v, kv, ctx, d ** -0.5))
            torch_attn = TorchPagedAttention()
            c.baseline = f"torch SDPA {time_ms(lambda: torch_attn.forward(q, k, v, kv, ctx, d ** -0.5)):.3f} ms"
        out.append(c)
    return out


def gdn_checks(device: torch.device, tokens: tuple[int, ...], timed: bool) -> list[Check]:
    """fla-core vs the torch forms (only on CUDA with fla installed; otherwise an empty list)."""
    from awqserve.layers.gdn_ops import fla_available, gated_delta_rule

    if device.type != "cuda" or not fla_available():
        return []
    out = []
    for t in tokens:
        h, hv, dk, dv = 16, 32, 128, 128
        q, k = (torch.randn(t, h, dk, device=device, dtype=torch.bfloat16) for _ in range(2))
        v = torch.randn(t, hv, dv, device=device, dtype=torch.bfloat16)
        g = -torch.rand(t, hv, device=device) * 0.5
        beta = torch.rand(t, hv, device=device)
        state = torch.randn(1, hv, dk, dv, device=device) * 0.1
        cu = [0, t]
        ref, _ = gated_delta_rule(q.float(), k.float(), v.float(), g, beta, cu_seqlens=cu, initial_state=state,
                                  backend="torch")
        got, _ = gated_delta_rule(q, k, v, g, beta, cu_seqlens=cu, initial_state=state)
        c = Check("GDN fla-core chunked" if t > 1 else "GDN fla-core recurrent", f"T={t} HV={hv}", rel_err(got, ref),
                  BF16_BOUND)
        if timed:
            c.ms = time_ms(lambda: gated_delta_rule(q, k, v, g, beta, cu_seqlens=cu, initial_state=state))
        out.append(c)
    return out
