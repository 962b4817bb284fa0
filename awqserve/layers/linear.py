"""Linear layer whose weight comes from one or more checkpoint modules and runs on a chosen kernel."""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from awqserve.quant.base import QuantizedTensor


class LinearKernel(nn.Module):
    """A prepared weight plus the matmul that applies it: forward(x [M, K]) -> [M, N] in x's dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError


class DenseKernel(LinearKernel):
    """Plain float weight; the fallback every device supports."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.contiguous(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x.to(self.weight.dtype), self.weight).to(x.dtype)


class Linear(nn.Module):
    """y = x Wᵀ (+ b), W [sum(out_sizes), in_features].

    `sources` names the checkpoint modules (siblings of this module's own name) whose weights are
    concatenated along the output dim, e.g. ["q_proj", "k_proj", "v_proj"]; None means the module's
    own name. The loader calls `set_weight` once with one part per source, then the model's
    finalize step calls `build_kernel`. Before that the module holds no tensors (meta-safe).
    """

    def __init__(self, in_features: int, out_sizes: int | Sequence[int], *, bias: bool = False,
                 sources: Sequence[str] | None = None) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_sizes = [out_sizes] if isinstance(out_sizes, int) else list(out_sizes)
        self.out_features = sum(self.out_sizes)
        self.sources = list(sources) if sources is not None else None
        self.has_bias = bias
        if self.sources is not None and len(self.sources) != len(self.out_sizes):
            raise ValueError("one out_size per source")
        self.bias: nn.Parameter | None = None
        self.kernel: LinearKernel | None = None
        self._pending: torch.Tensor | QuantizedTensor | None = None

    def source_names(self, own_name: str) -> list[str]:
        """Full checkpoint names of the modules this layer reads, given its own full name."""
        if self.sources is None:
            return [own_name]
        parent = own_name.rsplit(".", 1)[0] if "." in own_name else ""
        return [f"{parent}.{s}" if parent else s for s in self.sources]

    def set_weight(self, parts: list[torch.Tensor | QuantizedTensor], biases: list[torch.Tensor] | None) -> None:
        """Receive the per-source weights (validated shapes) and optional biases."""
        for part, n in zip(parts, self.out_sizes):
            if tuple(part.shape) != (n, self.in_features):
                raise ValueError(f"weight shape {tuple(part.shape)} != expected {(n, self.in_features)}")
        if all(isinstance(p, QuantizedTensor) for p in parts):
            self._pending = parts[0] if len(parts) == 1 else QuantizedTensor.concat_out(parts)  # type: ignore[arg-type]
        else:  # mixed or float: fall back to one dense weight
            dense = [p.dequantize() if isinstance(p, QuantizedTensor) else p for p in parts]
            self._pending = dense[0] if len(dense) == 1 else torch.cat([d.to(dense[0].dtype) for d in dense])
        if biases is not None:
            self.bias = nn.Parameter(torch.cat(biases).float(), requires_grad=False)

    @property
    def pending_weight(self) -> torch.Tensor | QuantizedTensor | None:
        return self._pending

    def build_kernel(self, make_kernel: "Callable[[torch.Tensor | QuantizedTensor, torch.device, torch.dtype], LinearKernel]",
                     device: torch.device, dtype: torch.dtype) -> None:
        """Turn the pending weight into a kernel via `make_kernel(weight, device, dtype)`; frees the source."""
        if self._pending is None:
            raise RuntimeError("Linear.build_kernel called before set_weight")
        self.kernel = make_kernel(self._pending, device, dtype)
        self._pending = None
        if self.bias is not None:
            self.bias = nn.Parameter(self.bias.data.to(device=device, dtype=dtype), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        assert self.kernel is not None, "Linear used before build_kernel"
        y: torch.Tensor = self.kernel(x.reshape(-1, shape[-1]))
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_sizes}, bias={self.has_bias}, sources={self.sources}"
