"""awqserve: a compact, fast, OpenAI-compatible inference server for 4-bit AWQ models."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from awqserve.version import __version__

if TYPE_CHECKING:
    from awqserve.engine.sampling_params import SamplingParams
    from awqserve.entrypoints.llm import LLM

__all__ = ["LLM", "SamplingParams", "__version__"]


def __getattr__(name: str) -> Any:  # lazy: `import awqserve` must not import torch
    if name == "LLM":
        from awqserve.entrypoints.llm import LLM

        return LLM
    if name == "SamplingParams":
        from awqserve.engine.sampling_params import SamplingParams

        return SamplingParams
    raise AttributeError(name)
