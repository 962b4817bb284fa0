"""Compiled execution of the model: torch.compile graphs for decode steps and direct calls of them.

The runner asks for a `CompiledDecode` and calls it for eligible steps; everything the compiler needs
from other packages comes through small declared APIs: `CausalLM.compilable_decode`,
`quant.kernels.kernel_switch_points`, `RotaryEmbedding.ensure_cache`, `DecodeMeta.attend`.
"""
from __future__ import annotations

import os
from pathlib import Path


def use_awqserve_inductor_cache() -> None:
    """Keep inductor's compiled kernels under `$XDG_CACHE_HOME/awqserve/inductor` (~/.cache when unset)
    so later starts reuse them. Must run before `torch._inductor` is imported: inductor writes its
    directory into the environment for its compile workers, after which a later default is ignored
    (measured: everything landed in /tmp/torchinductor_root, which does not survive a reboot)."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(base / "awqserve" / "inductor"))


use_awqserve_inductor_cache()  # on import of this package, i.e. before graph_capture imports inductor
