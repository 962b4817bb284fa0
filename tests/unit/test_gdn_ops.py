"""Gated DeltaNet kernels: chunked form vs recurrence, varlen front end, state continuation, conv.

Tolerances: everything is float32. The chunked form reorders sums and solves a triangular
system, so it matches the token-by-token recurrence to atol/rtol 2e-5 on unit-scale random
inputs (measured worst case ~3e-6). transformers' own torch fallback is a third, independent
reference for the full pipeline (l2norm, scale, GVA head repeat) at the same tolerance.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from awqserve.layers.gdn_ops import (causal_conv1d, chunked_delta_rule, gated_delta_rule, l2norm,
                                     recurrent_delta_rule)

ATOL = RTOL = 2e-5


def _inputs(b: int, length: int, dk: int = 16, dv: int = 24, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    q = l2norm(torch.randn(b, length, dk, generator=gen)) * dk ** -0.5
    k = l2norm(torch.randn(b, length, dk, generator=gen))
    v = torch.randn(b, length, dv, generator=gen)
    # decays from strong (e^-4) to none, like -exp(A_log) * softplus(a + dt_bias)
    g = -torch.rand(b, length, generator=gen) * 4 * torch.rand(b, 1, generator=gen)
    beta = torch.rand(b, length, generator=gen)
    return q, k, v, g, beta


@pytest.mark.parametrize("length", [1, 5, 64, 130])
@pytest.mark.parametrize("with_state", [False, True])
def test_chunked_matches_recurrent(length: int, with_state: bool) -> None:
    q, k, v, g, beta = _inputs(3, length)
    s0 = torch.randn(3, 16, 24) if with_state else torch.zeros(3, 16, 24)
    o_ref, s_ref = recurrent_delta_rule(q, k, v, g, beta, s0)
    o, s = chunked_delta_rule(q, k, v, g, beta, s0)
    torch.testing.assert_close(o, o_ref, atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(s, s_ref, atol=ATOL, rtol=RTOL)
    assert o_ref.abs().mean() > 1e-3  # not a vacuous comparison


@pytest.mark.parametrize("chunk", [16, 64])
def test_chunked_small_chunk_sizes(chunk: int) -> None:
    q, k, v, g, beta = _inputs(2, 100, seed=1)
    s0 = torch.randn(2, 16, 24)
    o_ref, s_ref = recurrent_delta_rule(q, k, v, g, beta, s0)
    o, s = chunked_delta_rule(q, k, v, g, beta, s0, chunk=chunk)
    torch.testing.assert_close(o, o_ref, atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(s, s_ref, atol=ATOL, rtol=RTOL)


def test_recurrence_is_the_documented_rule() -> None:
    """One explicit step: S <- S e^g; delta = beta (v - S^T k); S <- S + k delta^T; o = S^T q."""
    q, k, v, g, beta = _inputs(1, 1, dk=4, dv=3)
    s0 = torch.randn(1, 4, 3)
    s = s0[0] * g[0, 0].exp()
    delta = beta[0, 0] * (v[0, 0] - s.t() @ k[0, 0])
    s = s + torch.outer(k[0, 0], delta)
    o, s_out = recurrent_delta_rule(q, k, v, g, beta, s0)
    torch.testing.assert_close(s_out[0], s)
    torch.testing.assert_close(o[0, 0], s.t() @ q[0, 0])


def _varlen_inputs(lens: list[int], h: int = 2, hv: int = 4, dk: int = 8, dv: int = 8, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    t = sum(lens)
    q, k = torch.randn(t, h, dk, generator=gen), torch.randn(t, h, dk, generator=gen)
    v = torch.randn(t, hv, dv, generator=gen)
    g = -F.softplus(torch.randn(t, hv, generator=gen)) * 0.5
    beta = torch.rand(t, hv, generator=gen)
    cu = [0]
    for n in lens:
        cu.append(cu[-1] + n)
    return q, k, v, g, beta, cu


@pytest.mark.parametrize("lens", [[1, 1, 1], [5, 64, 130, 1], [70]])
def test_varlen_backends_agree(lens: list[int]) -> None:
    q, k, v, g, beta, cu = _varlen_inputs(lens)
    s0 = torch.randn(len(lens), 4, 8, 8)
    o_ref, s_ref = gated_delta_rule(q, k, v, g, beta, cu_seqlens=cu, initial_state=s0, backend="recurrent")
    for backend in ("chunked", "torch", "auto"):
        o, s = gated_delta_rule(q, k, v, g, beta, cu_seqlens=cu, initial_state=s0, backend=backend)
        torch.testing.assert_close(o, o_ref, atol=ATOL, rtol=RTOL)
        torch.testing.assert_close(s, s_ref, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("split", [1, 7, 64, 100])
def test_continuation_equals_one_shot(split: int) -> None:
    """Running a sequence in two steps, passing the final state on, equals running it at once."""
    q, k, v, g, beta, cu = _varlen_inputs([130], seed=2)
    s0 = torch.zeros(1, 4, 8, 8)
    o_all, s_all = gated_delta_rule(q, k, v, g, beta, cu_seqlens=cu, initial_state=s0)
    sl1, sl2 = slice(0, split), slice(split, 130)
    o1, s1 = gated_delta_rule(q[sl1], k[sl1], v[sl1], g[sl1], beta[sl1], cu_seqlens=[0, split], initial_state=s0)
    o2, s2 = gated_delta_rule(q[sl2], k[sl2], v[sl2], g[sl2], beta[sl2], cu_seqlens=[0, 130 - split],
                              initial_state=s1)
    torch.testing.assert_close(torch.cat([o1, o2]), o_all, atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(s2, s_all, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("with_state", [False, True])
def test_matches_transformers_torch_fallback(with_state: bool) -> None:
    from transformers.models.qwen3_next import modeling_qwen3_next as ref

    q, k, v, g, beta, cu = _varlen_inputs([77], seed=3)
    s0 = torch.randn(1, 4, 8, 8) if with_state else torch.zeros(1, 4, 8, 8)
    o_ref, s_ref = ref.torch_chunk_gated_delta_rule(q[None], k[None], v[None], g=g[None], beta=beta[None],
                                                    initial_state=s0, output_final_state=True,
                                                    use_qk_l2norm_in_kernel=True)
    o, s = gated_delta_rule(q, k, v, g, beta, cu_seqlens=cu, initial_state=s0)
    torch.testing.assert_close(o, o_ref[0], atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(s, s_ref, atol=ATOL, rtol=RTOL)


def _conv_reference(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Zero-history causal depthwise conv of one sequence x [L, D] with w [D, W]."""
    width = w.shape[1]
    return F.conv1d(x.t()[None], w[:, None], padding=width - 1, groups=x.shape[1])[0, :, :x.shape[0]].t()


def test_conv_prefill_decode_and_chunks_agree() -> None:
    gen = torch.Generator().manual_seed(4)
    d, width, length = 6, 4, 11
    x, w = torch.randn(length, d, generator=gen), torch.randn(d, width, generator=gen)
    ref = _conv_reference(x, w)
    zero = torch.zeros(1, d, width - 1)
    y, final = causal_conv1d(x, w, [0, length], zero)
    torch.testing.assert_close(y, ref)
    torch.testing.assert_close(final[0], x[-(width - 1):].t())
    # token by token through the decode path
    state, outs = zero, []
    for t in range(length):
        yt, state = causal_conv1d(x[t:t + 1], w, [0, 1], state)
        outs.append(yt)
    torch.testing.assert_close(torch.cat(outs), ref)
    # uneven chunks, including one shorter than the kernel
    state, outs = zero, []
    for a, b in [(0, 2), (2, 3), (3, 9), (9, 11)]:
        yt, state = causal_conv1d(x[a:b], w, [0, b - a], state)
        outs.append(yt)
    torch.testing.assert_close(torch.cat(outs), ref)
    torch.testing.assert_close(state, final)


def test_conv_varlen_batch_equals_each_alone() -> None:
    gen = torch.Generator().manual_seed(5)
    d, width = 5, 4
    lens = [3, 1, 8]
    x, w = torch.randn(sum(lens), d, generator=gen), torch.randn(d, width, generator=gen)
    s0 = torch.randn(3, d, width - 1, generator=gen)
    cu = [0, 3, 4, 12]
    y, final = causal_conv1d(x, w, cu, s0)
    for i in range(3):
        yi, fi = causal_conv1d(x[cu[i]:cu[i + 1]], w, [0, lens[i]], s0[i:i + 1])
        torch.testing.assert_close(y[cu[i]:cu[i + 1]], yi)
        torch.testing.assert_close(final[i:i + 1], fi)
