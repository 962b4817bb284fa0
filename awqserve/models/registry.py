"""The one explicit model registry: config.json `architectures[0]` → model class (imported lazily)."""
from __future__ import annotations

import importlib

from awqserve.errors import UnsupportedError

# architecture name -> (module, class name)
_MODELS: dict[str, tuple[str, str]] = {
    "LlamaForCausalLM": ("awqserve.models.llama", "LlamaForCausalLM"),
    "MistralForCausalLM": ("awqserve.models.llama", "LlamaForCausalLM"),
    "Qwen2ForCausalLM": ("awqserve.models.llama", "Qwen2ForCausalLM"),
    "Qwen3ForCausalLM": ("awqserve.models.qwen3", "Qwen3ForCausalLM"),
    "Qwen3MoeForCausalLM": ("awqserve.models.qwen3_moe", "Qwen3MoeForCausalLM"),
    "Qwen3NextForCausalLM": ("awqserve.models.qwen3_next", "Qwen3NextForCausalLM"),
}


def supported_architectures() -> list[str]:
    return sorted(_MODELS)


def resolve_model_class(architecture: str) -> type:
    """Return the class for `architecture`; unknown names raise UnsupportedError listing the supported ones."""
    try:
        module_name, class_name = _MODELS[architecture]
    except KeyError:
        raise UnsupportedError(
            f"unsupported model architecture {architecture!r}; supported: {', '.join(supported_architectures())}"
        ) from None
    cls: type = getattr(importlib.import_module(module_name), class_name)
    return cls
