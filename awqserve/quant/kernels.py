"""Linear kernels for int4 weights and the per-layer choice between them (`make_kernel`).

Kernels (all: forward(x [M, K]) -> [M, N] in x's dtype, any M including 0):
- `DenseKernel` (layers/linear.py): a float weight; quantized weights are dequantized once at load.
- `Int4CpuKernel`: PyTorch's CPU int4 weight-only matmul (bf16 activations, ISA-specific packed
  layout built at load, never stored). 0.5 byte per weight, every M. (Per-call dequantization for
  large M was measured and lost on CPU: elementwise passes cost more than the GEMM they feed.)
- `PackedBf16Kernel`: a bf16 copy in oneDNN's blocked layout (CPU with native bf16): bit-identical to
  `F.linear`, 35 % faster at 16 rows; the dense copy behind the hybrid kernel and the lm_head.
- `Int8RowKernel`: int8 per-row copy of a float weight; the lm_head for <= 4 rows (`logits_kernel`).
- `HybridKernel`: int4 for M <= m_max (decode), a dense copy for larger M (prefill).
- `kernels.cpu.q8_kernels.Q8Int4Kernel` / `Q8Int8RowKernel` (AVX2 CPUs, C++ ops built at install):
  int4 / int8 weights times int8-rounded activations, streaming the weight at memory speed; in
  front of the hybrid for up to `q8_int4_max_m()` rows, and the lm_head for up to `q8_head_max_m()`.
- CUDA: `kernels.w4a16_kernel.TritonW4A16Kernel` when Triton is installed (groups 32/64/128), else
  `Int4CudaKernel`: tinygemm for every M; both one 0.5-byte copy (so the 80B flagship fits one GPU).

Policies (`WeightLayout`): DENSE (always dequantize), INT4 (int4-resident, smallest memory), AUTO (the
rule measured in docs/benchmarks/cpu-linear-kernels.md: hybrid on CPU, int4-resident on CUDA). An
explicit `--dtype` (`KernelPolicy.compute_dtype`) makes every kernel compute in that dtype.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable, Iterable

import torch
from torch import nn

from awqserve.config.engine_config import LmHeadPrecision, WeightLayout
from awqserve.layers.linear import DenseKernel, LinearKernel
from awqserve.quant.base import QuantizedTensor

INT4_GROUPS = (256, 128, 64, 32)
"""Group sizes PyTorch's int4 kernels accept; larger checkpoint groups are split into these."""
CPU_INT4_MAX_M = 8
"""Hybrid rule on CPUs with native bf16: rows per call up to which the int4 kernel beats dense
(measured, docs/benchmarks/cpu-linear-kernels.md)."""
CPU_INT4_MAX_M_NO_BF16 = 1
"""Same without native bf16 (AVX2 only): int4 won at M=1 and lost from M=8 (AWQ_FORMATS.md §4)."""


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True when the CPU multiplies bf16 natively (AVX512-BF16 or AMX), so dense bf16 GEMMs are fast."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as f:
            flags = f.read()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def cpu_int4_max_m() -> int:
    """The hybrid kernel's default switch point on this CPU."""
    return CPU_INT4_MAX_M if cpu_has_native_bf16() else CPU_INT4_MAX_M_NO_BF16


def int4_group(qt: QuantizedTensor) -> int | None:
    """The kernel group size for `qt` (a supported size dividing its group), or None if none fits."""
    return next((g for g in INT4_GROUPS if qt.group_size % g == 0 and qt.shape[1] % g == 0), None)


def _scales_and_zeros(qt: QuantizedTensor, group: int) -> torch.Tensor:
    """[K/group, N, 2] (scale, zero) for kernels computing (u - 8) * scale + zero with u = q + 8.

    (q - z) * s == (u - 8) * s + (-z * s), so zero = -z * s. Groups larger than `group` repeat.
    """
    rep = qt.group_size // group
    s = qt.scales.to(torch.float32)
    z = torch.zeros_like(s) if qt.zeros is None else -qt.zeros.to(torch.float32) * s
    sz = torch.stack([s, z], dim=-1).repeat_interleave(rep, dim=1)  # [N, K/group, 2]
    return sz.transpose(0, 1).contiguous()


def _nibble_bytes(qt: QuantizedTensor) -> torch.Tensor:
    """uint8 [N, K/2], unsigned nibbles u = q + 8; even column in the low nibble."""
    u = (qt.qweight.to(torch.int16) + 8).to(torch.uint8)
    return (u[:, 0::2] | (u[:, 1::2] << 4)).contiguous()


class Int4CpuKernel(LinearKernel):
    """PyTorch CPU int4 weight-only matmul. Activations run in `compute_dtype`: bf16 by default (fp32
    activations are 7-50x slower), float32 when the user asks for it (`--dtype float32`)."""

    packed: torch.Tensor
    sz: torch.Tensor

    def __init__(self, qt: QuantizedTensor, compute_dtype: torch.dtype = torch.bfloat16) -> None:
        super().__init__()
        group = int4_group(qt)
        if group is None or qt.shape[0] % 16:
            raise ValueError(f"CPU int4 kernel cannot take weight {qt.shape} group {qt.group_size}")
        self.group = group
        self.out_features = qt.shape[0]
        u = qt.qweight.to(torch.int32) + 8
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(u.contiguous(), 1)
        self.compute_dtype = compute_dtype
        self.register_buffer("packed", packed, persistent=False)
        self.register_buffer("sz", _scales_and_zeros(qt, group).to(compute_dtype), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.shape[0]
        if m == 0:
            return x.new_zeros((0, self.out_features))
        xc = x.to(self.compute_dtype).contiguous()
        out: torch.Tensor = torch.ops.aten._weight_int4pack_mm_for_cpu(xc, self.packed, self.group, self.sz).to(x.dtype)
        return out


def _packed_linear(x: torch.Tensor, packed: torch.Tensor) -> torch.Tensor:
    out: torch.Tensor = torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], "")
    return out


# Inside a compiled graph the packed weight is an input, which inductor's own lowering of the oneDNN op
# refuses (it wants a frozen constant); an opaque op of ours is called as an extern kernel instead.
# (torch.library's registration API is untyped; the ignores below are only that.)
_LIB = torch.library.Library("awqserve", "FRAGMENT")  # type: ignore[no-untyped-call]
_LIB.define("packed_linear(Tensor x, Tensor packed) -> Tensor")  # type: ignore[no-untyped-call]
_LIB.impl("packed_linear", _packed_linear, "CompositeExplicitAutograd")  # type: ignore[no-untyped-call]


@torch.library.register_fake("awqserve::packed_linear")  # type: ignore[untyped-decorator]
def _(x: torch.Tensor, packed: torch.Tensor) -> torch.Tensor:
    return x.new_empty((x.shape[0], packed.shape[0]))


class PackedBf16Kernel(LinearKernel):
    """A bf16 weight reordered once into oneDNN's blocked layout (CPU): same numbers as `F.linear`
    (bit-identical, checked), less time re-blocking per call — measured on the demo's gate_up weight:
    181 vs 276 us at 16 rows, 60 vs 139 us at 1 row, ~3 % at 2048 rows."""

    packed: torch.Tensor

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.out_features = weight.shape[0]
        w = weight.to(torch.bfloat16).contiguous()
        self.register_buffer("packed", torch.ops.mkldnn._reorder_linear_weight(w, None), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] == 0:
            return x.new_zeros((0, self.out_features))
        xb = x.to(torch.bfloat16).contiguous()
        if torch.compiler.is_compiling():
            out: torch.Tensor = torch.ops.awqserve.packed_linear(xb, self.packed).to(x.dtype)
            return out
        return _packed_linear(xb, self.packed).to(x.dtype)  # eager: skip the op dispatch (~15 us)


def cpu_bf16_kernel(weight: torch.Tensor) -> LinearKernel:
    """The fastest exact kernel for a bf16 weight on this CPU: oneDNN-packed where available."""
    if torch.backends.mkldnn.is_available() and cpu_has_native_bf16():  # type: ignore[no-untyped-call]
        try:
            return PackedBf16Kernel(weight)
        except RuntimeError:  # a build without the oneDNN linear ops
            pass
    return DenseKernel(weight.to(torch.bfloat16))


class HybridKernel(LinearKernel):
    """`small` for calls of at most `m_max` rows, `large` otherwise (both hold the same weight)."""

    def __init__(self, small: LinearKernel, large: LinearKernel, m_max: int) -> None:
        super().__init__()
        self.small, self.large, self.m_max = small, large, m_max

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.small(x) if x.shape[0] <= self.m_max else self.large(x)
        return out


class Int8RowKernel(LinearKernel):
    """Float weight requantized to int8 with one scale per output row (CPU `_weight_int8pack_mm`).

    For the logits projection at decode: half the bytes of bf16 per token (the demo's 49152x576
    lm_head: 1.6 ms vs 5.1 ms at one row, measured; it loses from 8 rows, so it sits inside a
    HybridKernel). llama.cpp's own GGUF of the demo keeps this tensor in Q8_0 as well.
    """

    qweight: torch.Tensor
    scales: torch.Tensor

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        w = weight.float()
        scale = (w.abs().amax(dim=1) / 127.0).clamp_min(torch.finfo(torch.float32).tiny)
        q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)
        self.out_features = weight.shape[0]
        self.register_buffer("qweight", q.contiguous(), persistent=False)
        self.register_buffer("scales", scale.to(torch.bfloat16), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] == 0:
            return x.new_zeros((0, self.out_features))
        xb = x.to(torch.bfloat16).contiguous()
        out: torch.Tensor = torch.ops.aten._weight_int8pack_mm(xb, self.qweight, self.scales).to(x.dtype)
        return out


LM_HEAD_INT8_MAX_M = 4
"""Rows up to which the int8 logits kernel beats bf16 (measured: 1.6 vs 5.1 ms at 1, 2.6 vs 3.9 at 4,
5.6 vs 4.4 at 8)."""
Q8_INT4_MAX_M = (1, 128)
"""Rows up to which the q8 int4 kernel runs: (CPUs with native bf16, AVX2-only CPUs). Measured on an
AVX2 EPYC, 2 threads, weights out of cache (docs/benchmarks/cpu-q8-kernels.md): it beats PyTorch's
int4 kernel at every M (gate_up: 79 vs 149 us at 1 row, 451 vs 826 at 16) and the fp32 dense copy
at every M up to 128 (gate_up 79 vs 607 us at 1 row, 451 vs 1092 at 16, 3508 vs 4251 at 128; even
at 256: 6965 vs 7357). Where bf16 is native the bf16 dense copy and PyTorch's int4 kernel are faster
than on AVX2 and the crossover was not measured, so the q8 kernel only takes one-row calls there."""
Q8_HEAD_MAX_M = (8, 32)
"""Rows up to which the q8 int8 lm_head runs, same split (AVX2: 1.3 / 3.8 / 7.7 / 14.7 ms at 1 / 8 /
16 / 32 rows against 10.2 / 21.4 / 26.6 / 33.2 ms for the fp32 head; 29.5 vs 51.8 at 64 the other
way round. With native bf16, the packed bf16 head was 4.4 ms at 8 rows on the AVX-512 machine)."""


def q8_int4_max_m() -> int:
    return Q8_INT4_MAX_M[0] if cpu_has_native_bf16() else Q8_INT4_MAX_M[1]


def q8_head_max_m() -> int:
    return Q8_HEAD_MAX_M[0] if cpu_has_native_bf16() else Q8_HEAD_MAX_M[1]


def _q8_ready(device: torch.device) -> bool:
    if device.type != "cpu":
        return False
    from awqserve.kernels.cpu.q8_kernels import available

    return available()


def logits_kernel(kernel: LinearKernel, device: torch.device, mode: LmHeadPrecision,
                  quantized: bool = False) -> LinearKernel:
    """The kernel for the logits projection (lm_head) given its built `kernel` and a mode:
    FLOAT keeps it; INT8 adds an int8 per-row copy used for few rows (the q8 kernel for <=
    Q8_HEAD_MAX_M rows where it is built, else PyTorch's for <= LM_HEAD_INT8_MAX_M). AUTO does that
    for the float head of a `quantized` (int4) checkpoint where the q8 kernel is built (llama.cpp keeps
    that tensor in Q8_0 too), and otherwise on CPUs with native bf16 when the head already runs in bf16;
    fp32 reference setups of float checkpoints and quantized heads are kept as they are."""
    if mode == LmHeadPrecision.FLOAT or device.type != "cpu" or not isinstance(kernel, DenseKernel):
        return kernel
    weight = kernel.weight.data
    if (mode == LmHeadPrecision.INT8 or quantized) and _q8_ready(device) and weight.shape[1] % 64 == 0:
        from awqserve.kernels.cpu.q8_kernels import Q8Int8RowKernel

        large = cpu_bf16_kernel(weight) if cpu_has_native_bf16() else kernel
        return HybridKernel(Q8Int8RowKernel(weight), large, q8_head_max_m())
    if mode == LmHeadPrecision.AUTO and not (cpu_has_native_bf16() and kernel.weight.dtype == torch.bfloat16):
        return kernel
    return HybridKernel(Int8RowKernel(weight), cpu_bf16_kernel(weight), LM_HEAD_INT8_MAX_M)


def _cuda_inner_k_tiles(k: int) -> int | None:
    return next((t for t in (8, 4, 2) if k % (16 * t) == 0), None)


class Int4CudaKernel(LinearKernel):
    """CUDA tinygemm (`_weight_int4pack_mm`), int4-resident: 0.5 byte per weight plus scales.

    A single copy on purpose: a second (dequantized or nibble) copy would double the weights of an
    80B checkpoint past one GPU. Not exercised by the CPU test-suite.
    """

    packed: torch.Tensor
    sz: torch.Tensor

    def __init__(self, qt: QuantizedTensor, device: torch.device) -> None:
        super().__init__()
        group, tiles = int4_group(qt), _cuda_inner_k_tiles(qt.shape[1])
        if group is None or tiles is None or qt.shape[0] % 8:
            raise ValueError(f"CUDA int4 kernel cannot take weight {qt.shape} group {qt.group_size}")
        self.group, self.out_features = group, qt.shape[0]
        u = (qt.qweight.to(torch.int16) + 8).to(torch.uint8)
        hi_lo = ((u[:, 0::2] << 4) | u[:, 1::2]).contiguous().to(device)  # tinygemm: even column high
        packed = torch.ops.aten._convert_weight_to_int4pack(hi_lo, tiles)
        self.register_buffer("packed", packed, persistent=False)
        self.register_buffer("sz", _scales_and_zeros(qt, group).to(device=device, dtype=torch.bfloat16),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] == 0:
            return x.new_zeros((0, self.out_features))
        xb = x.to(torch.bfloat16).contiguous()
        out: torch.Tensor = torch.ops.aten._weight_int4pack_mm(xb, self.packed, self.group, self.sz).to(x.dtype)
        return out


@dataclass(frozen=True)
class KernelPolicy:
    """How `make_kernel` treats weights.

    `mode`: the weight layout (WeightLayout; a string is converted). `lm_head`: precision of the logits
    projection (DENSE always means FLOAT). `small_m_max`: rows up to which the int4 matmul is used in
    hybrid mode (None: the device default). `dense_dtype`: dtype of dequantized copies (None: bf16 on
    CPUs with native bf16, else the model dtype). `compute_dtype`: when set (an explicit `--dtype`),
    every kernel computes in it — no bf16 shortcut; None lets kernels pick (bf16 where native).
    """

    mode: WeightLayout = WeightLayout.AUTO
    small_m_max: int | None = None
    dense_dtype: torch.dtype | None = None
    lm_head: LmHeadPrecision = LmHeadPrecision.AUTO
    compute_dtype: torch.dtype | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", WeightLayout(self.mode))
        object.__setattr__(self, "lm_head", LmHeadPrecision(self.lm_head))

    @property
    def lm_head_mode(self) -> LmHeadPrecision:
        if self.mode == WeightLayout.DENSE or self.compute_dtype == torch.float32:
            return LmHeadPrecision.FLOAT
        return self.lm_head


def _dense_dtype(policy: KernelPolicy, dtype: torch.dtype, device: torch.device) -> torch.dtype:
    if policy.dense_dtype is not None:
        return policy.dense_dtype
    if policy.mode == WeightLayout.DENSE or policy.compute_dtype is not None:
        return dtype  # the exact reference layout, or an explicit dtype: everything in the model dtype
    if device.type == "cpu" and dtype == torch.float32 and cpu_has_native_bf16():
        return torch.bfloat16
    return dtype


def _float_weight_dtype(weight: torch.Tensor, policy: KernelPolicy, dtype: torch.dtype,
                        device: torch.device) -> torch.dtype:
    """Float weights run in the model dtype, except that a weight *stored* in bf16 stays bf16 on CPUs
    that multiply bf16 natively (policy auto/int4, no explicit dtype): no information is lost, half the
    bytes are read per token (the demo model's tied 49152x576 lm_head: 3.8 ms instead of 10 ms per
    decode step)."""
    if (weight.dtype == torch.bfloat16 and device.type == "cpu" and policy.mode != WeightLayout.DENSE
            and policy.compute_dtype is None and cpu_has_native_bf16()):
        return torch.bfloat16
    return dtype


def make_kernel(weight: torch.Tensor | QuantizedTensor, device: torch.device | str, dtype: torch.dtype,
                policy: str | KernelPolicy = "auto") -> LinearKernel:
    """Build the kernel for one Linear weight on `device`; `dtype` is the model's activation dtype.

    Float weights always get a DenseKernel. Int4 weights follow the policy; shapes the int4 kernels
    cannot take (N not a multiple of 16, group not a multiple of 32) fall back to dense.
    """
    device = torch.device(device)
    pol = policy if isinstance(policy, KernelPolicy) else KernelPolicy(WeightLayout(policy))
    if not isinstance(weight, QuantizedTensor):
        return DenseKernel(weight.to(device=device, dtype=_float_weight_dtype(weight, pol, dtype, device)))
    dense_dtype = _dense_dtype(pol, dtype, device)

    def dense() -> LinearKernel:
        w = weight.dequantize(torch.float32).to(device=device, dtype=dense_dtype)
        if device.type == "cpu" and dense_dtype == torch.bfloat16 and pol.mode != WeightLayout.DENSE:
            return cpu_bf16_kernel(w)
        return DenseKernel(w)

    if pol.mode == WeightLayout.DENSE:
        return dense()
    if device.type == "cuda":
        from awqserve.kernels.w4a16_kernel import TritonW4A16Kernel, triton_available

        try:  # Triton W4A16 (split-K GEMV / tiled GEMM, fused MoE possible); tinygemm without Triton
            if triton_available():
                return TritonW4A16Kernel.from_quantized(weight, device, dtype)
        except ValueError:  # a group size the Triton kernels do not take
            pass
        try:
            return Int4CudaKernel(weight, device)
        except (ValueError, RuntimeError):  # shape unsupported, or a GPU without the tinygemm kernel
            return dense()
    if device.type != "cpu" or int4_group(weight) is None or weight.shape[0] % 16:
        return dense()
    return _cpu_int4_kernel(weight, pol, dense)


def _cpu_int4_kernel(weight: QuantizedTensor, pol: KernelPolicy, dense: Callable[[], LinearKernel]) -> LinearKernel:
    """CPU int4: [q8 up to q8_int4_max_m() rows] -> PyTorch int4 up to m_max rows -> dense copy above
    (AUTO), or int4-resident (INT4). The q8 front only without an explicit --dtype (it rounds
    activations to int8)."""
    from awqserve.kernels.cpu import q8_kernels

    q8 = (q8_kernels.Q8Int4Kernel(weight) if pol.compute_dtype is None and q8_kernels.supports(weight)
          and _q8_ready(torch.device("cpu")) else None)
    m_max, q8_max = pol.small_m_max or cpu_int4_max_m(), q8_int4_max_m()
    if pol.mode == WeightLayout.INT4:
        int4: LinearKernel = Int4CpuKernel(weight, pol.compute_dtype or torch.bfloat16)
        return int4 if q8 is None else HybridKernel(q8, int4, q8_max)
    if q8 is not None and m_max <= q8_max:  # nothing left for PyTorch's int4 kernel to do
        return HybridKernel(q8, dense(), q8_max)
    rest = HybridKernel(Int4CpuKernel(weight, pol.compute_dtype or torch.bfloat16), dense(), m_max)
    return rest if q8 is None else HybridKernel(q8, rest, q8_max)


def kernel_switch_points(modules: Iterable[nn.Module]) -> list[int]:
    """Row counts at which some kernel among `modules` changes implementation (a call of m rows with
    m <= point runs differently from m > point), sorted. Compiled decode graphs are split there."""
    return sorted({m.m_max for m in modules if isinstance(m, HybridKernel)})
