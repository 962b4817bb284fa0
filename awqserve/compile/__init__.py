"""Compiled execution of the model: torch.compile graphs for decode steps and direct calls of them.

The runner asks for a `CompiledDecode` and calls it for eligible steps; everything the compiler needs
from other packages comes through small declared APIs: `CausalLM.compilable_decode`,
`quant.kernels.kernel_switch_points`, `RotaryEmbedding.ensure_cache`, `DecodeMeta.attend`.
"""
