"""Nibble layouts: compressed-tensors pack-quantized (checked against the compressed_tensors package
itself) and AutoAWQ gemm (checked element by element against the documented interleave), plus RTN
quantization formulas. All comparisons here are exact (integer layouts) unless stated."""
from __future__ import annotations

import pytest
import torch

from awqserve.quant.packing import (AWQ_ORDER, AWQ_REVERSE_ORDER, awq_gemm_to_quantized, pack_awq, pack_ct_weight,
                                    pack_ct_zeros, pack_nibbles, quantize_rtn, quantized_to_awq_gemm, unpack_awq,
                                    unpack_ct_weight, unpack_ct_zeros, unpack_nibbles)

ct_helpers = pytest.importorskip("compressed_tensors.compressors.pack_quantized.helpers")
ct_base = pytest.importorskip("compressed_tensors.compressors.pack_quantized.base")
ct_quant = pytest.importorskip("compressed_tensors.quantization")


def _signed(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(-8, 8, shape, generator=g, dtype=torch.int8)


def test_nibble_bit_order_lsb_first() -> None:
    u = torch.tensor([[1, 2, 3, 4, 5, 6, 7, 15]])
    word = pack_nibbles(u)
    expected = sum(v << (4 * i) for i, v in enumerate([1, 2, 3, 4, 5, 6, 7, 15])) - 2**32  # top bit set
    assert word.dtype == torch.int32 and word.tolist() == [[expected]]
    assert unpack_nibbles(word, 8).tolist() == u.tolist()


@pytest.mark.parametrize("shape", [(16, 64), (24, 576), (8, 100), (3, 7)])
def test_ct_weight_matches_compressed_tensors(shape: tuple[int, int]) -> None:
    q = _signed(shape)
    ours = pack_ct_weight(q)
    theirs = ct_helpers.pack_to_int32(q, 4)
    assert torch.equal(ours, theirs)
    assert torch.equal(unpack_ct_weight(theirs, shape[1]), q)
    assert torch.equal(ct_helpers.unpack_from_int32(ours, 4, torch.Size(shape)), q)


@pytest.mark.parametrize("shape", [(64, 4), (20, 9), (8, 1)])
def test_ct_zeros_packed_along_out_dim(shape: tuple[int, int]) -> None:
    z = _signed(shape, seed=1)
    ours = pack_ct_zeros(z)
    assert ours.shape == (-(-shape[0] // 8), shape[1])
    theirs = ct_helpers.pack_to_int32(z, 4, packed_dim=0)
    assert torch.equal(ours, theirs)
    assert torch.equal(unpack_ct_zeros(theirs, shape[0]), z)
    # row n's nibble sits in word n // 8 at bits 4 * (n % 8), stored as signed + 8
    n, c = 13 % shape[0], shape[1] - 1
    assert ((int(ours[n // 8, c]) >> (4 * (n % 8))) & 0xF) == int(z[n, c]) + 8


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("group", [32, 64, 128, None])
def test_ct_compressor_round_trip(symmetric: bool, group: int | None) -> None:
    """Our RTN + packer produce exactly what compressed-tensors' compressor writes, and decompress equal."""
    torch.manual_seed(0)
    w = torch.randn(48, 256)
    qt = quantize_rtn(w, group, symmetric)
    strategy = "group" if group else "channel"
    scheme = ct_quant.QuantizationScheme(targets=["Linear"], weights=ct_quant.QuantizationArgs(
        num_bits=4, type="int", symmetric=symmetric, strategy=strategy, group_size=group))
    state = {"weight": w.clone(), "weight_scale": qt.scales.clone()}
    if not symmetric:
        state["weight_zero_point"] = qt.zeros.clone()
    packed = ct_base.PackedQuantizationCompressor.compress(state, scheme)
    assert torch.equal(packed["weight_packed"], pack_ct_weight(qt.qweight))
    if symmetric:
        assert "weight_zero_point" not in packed
    else:
        assert torch.equal(packed["weight_zero_point"], pack_ct_zeros(qt.zeros))
        assert torch.equal(unpack_ct_zeros(packed["weight_zero_point"], 48), qt.zeros)
    assert torch.equal(unpack_ct_weight(packed["weight_packed"], 256), qt.qweight)
    theirs = ct_base.PackedQuantizationCompressor.decompress(packed, scheme)["weight"]
    torch.testing.assert_close(theirs.float(), qt.dequantize(), rtol=0, atol=0)


def test_awq_interleave_single_word() -> None:
    cols = [1, 2, 3, 4, 5, 6, 7, 8]  # logical columns 0..7
    slots = [cols[AWQ_ORDER[i]] for i in range(8)]  # slot i holds column ORDER[i]
    assert slots == [1, 3, 5, 7, 2, 4, 6, 8]
    word = sum(v << (4 * i) for i, v in enumerate(slots))
    word -= 2**32 if word >= 2**31 else 0
    assert pack_awq(torch.tensor([cols])).tolist() == [[word]]
    assert unpack_awq(torch.tensor([[word]], dtype=torch.int32)).tolist() == [cols]


def test_awq_pack_element_by_element() -> None:
    g = torch.Generator().manual_seed(3)
    u = torch.randint(0, 16, (5, 24), generator=g)
    words = pack_awq(u)
    assert words.shape == (5, 3)
    for k in range(5):
        for n in range(24):
            slot = AWQ_REVERSE_ORDER[n % 8]
            assert AWQ_ORDER[slot] == n % 8
            assert (int(words[k, n // 8]) >> (4 * slot)) & 0xF == int(u[k, n])
    assert torch.equal(unpack_awq(words).long(), u)


def test_awq_gemm_dequant_formula() -> None:
    """W^T[k, n] = (q[k, n] - z[k // G, n]) * s[k // G, n], unsigned nibbles, zeros without offset."""
    g = torch.Generator().manual_seed(4)
    k_dim, n_dim, group = 64, 16, 32
    q_u = torch.randint(0, 16, (k_dim, n_dim), generator=g)
    z_u = torch.randint(0, 16, (k_dim // group, n_dim), generator=g)
    s = (torch.rand(k_dim // group, n_dim, generator=g) + 0.1).half()
    qt = awq_gemm_to_quantized(pack_awq(q_u), pack_awq(z_u), s, group)
    wt = (q_u - z_u.repeat_interleave(group, 0)).float() * s.float().repeat_interleave(group, 0)
    torch.testing.assert_close(qt.dequantize(), wt.t(), rtol=0, atol=0)
    assert int(qt.qweight.min()) >= -8 and int(qt.qweight.max()) <= 7
    # and back: canonical -> AutoAWQ tensors reproduce the inputs
    qw, qz, sc = quantized_to_awq_gemm(qt)
    assert torch.equal(unpack_awq(qw).long(), q_u) and torch.equal(unpack_awq(qz).long(), z_u)
    assert torch.equal(sc, s)


def test_awq_matches_compressed_tensors_converter() -> None:
    conv = pytest.importorskip("compressed_tensors.entrypoints.convert.converters.autoawq")
    g = torch.Generator().manual_seed(5)
    q_u = torch.randint(0, 16, (32, 16), generator=g)
    z_u = torch.randint(0, 16, (1, 16), generator=g)
    iw, iz = conv.AutoAWQConverter.unpack_awq(pack_awq(q_u), pack_awq(z_u), 4)
    iw, iz = conv.AutoAWQConverter.reverse_awq_order(iw, iz, 4)
    assert torch.equal(torch.bitwise_and(iw, 15).long(), q_u) and torch.equal(torch.bitwise_and(iz, 15).long(), z_u)


def test_quantize_rtn_symmetric_formula() -> None:
    w = torch.tensor([[-3.0, 1.0, 0.5, 2.0], [0.0, 0.0, 0.0, 0.0]])
    qt = quantize_rtn(w, 4, symmetric=True)
    assert qt.zeros is None and qt.group_size == 4
    torch.testing.assert_close(qt.scales[0], torch.tensor([3.0 / 7.5]))
    assert qt.qweight[0].tolist() == [-8, 2, 1, 5]  # round(x / 0.4), -7.5 -> -8 (half to even)
    assert qt.qweight[1].tolist() == [0, 0, 0, 0] and float(qt.scales[1, 0]) == 1.0


def test_quantize_rtn_asymmetric_formula() -> None:
    w = torch.tensor([[1.0, 2.5, 4.0, 2.0]])
    qt = quantize_rtn(w, None, symmetric=False)  # channel-wise: group = K
    s = 3.0 / 15
    zp = max(-8, min(7, round(-8 - 1.0 / s)))
    assert qt.group_size == 4 and int(qt.zeros[0, 0]) == zp
    expected = [max(-8, min(7, round(x / s + zp))) for x in [1.0, 2.5, 4.0, 2.0]]
    assert qt.qweight[0].tolist() == expected


@pytest.mark.parametrize("symmetric", [True, False])
def test_quantize_rtn_error_bound_and_constant_groups(symmetric: bool) -> None:
    torch.manual_seed(1)
    w = torch.randn(32, 128)
    w[0, :32] = 0.7  # constant positive group
    w[1, :32] = -0.3  # constant negative group
    qt = quantize_rtn(w, 32, symmetric)
    err = (qt.dequantize() - w).abs().view(32, 4, 32).amax(-1)
    assert bool((err <= qt.scales * 0.5 + 1e-6).all())  # half a step, also at the clamped +7.5 s edge
    if not symmetric:  # widened range makes constants exact
        torch.testing.assert_close(qt.dequantize()[:2, :32], w[:2, :32], rtol=1e-6, atol=1e-6)
