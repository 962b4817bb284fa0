"""Model configuration read from a Hugging Face model directory (config.json + generation_config.json)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

import torch

from awqserve.errors import ModelLoadError

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
           "fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
        return data
    except FileNotFoundError:
        raise ModelLoadError(f"{path.name} not found in {path.parent}") from None
    except json.JSONDecodeError as e:
        raise ModelLoadError(f"{path} is not valid JSON: {e}") from None


@dataclass(frozen=True)
class ModelConfig:
    """What the engine and models need to know about a checkpoint.

    `hf` is the raw config.json (read-only); model classes read their architecture-specific
    fields from it through `get`. Derived sizes are properties so they cannot drift.
    """

    path: Path
    hf: Mapping[str, Any]
    generation: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dir(cls, path: str | Path) -> "ModelConfig":
        p = Path(path).expanduser()
        if not p.is_dir():
            raise ModelLoadError(f"model directory {p} does not exist")
        hf = _read_json(p / "config.json")
        gen = _read_json(p / "generation_config.json") if (p / "generation_config.json").exists() else {}
        return cls(path=p, hf=MappingProxyType(hf), generation=MappingProxyType(gen))

    def get(self, key: str, default: Any = None) -> Any:
        """A config.json field, looking into `text_config` for nested (multimodal-style) configs."""
        if key in self.hf:
            return self.hf[key]
        text = self.hf.get("text_config")
        if isinstance(text, Mapping) and key in text:
            return text[key]
        return default

    def require(self, key: str) -> Any:
        value = self.get(key)
        if value is None:
            raise ModelLoadError(f"config.json of {self.path} lacks required field {key!r}")
        return value

    @property
    def architecture(self) -> str:
        archs = self.hf.get("architectures") or []
        if not archs:
            raise ModelLoadError(f"config.json of {self.path} has no 'architectures' entry")
        return str(archs[0])

    @property
    def model_type(self) -> str:
        return str(self.hf.get("model_type", ""))

    @property
    def vocab_size(self) -> int:
        return int(self.require("vocab_size"))

    @property
    def hidden_size(self) -> int:
        return int(self.require("hidden_size"))

    @property
    def num_layers(self) -> int:
        return int(self.require("num_hidden_layers"))

    @property
    def num_attention_heads(self) -> int:
        return int(self.require("num_attention_heads"))

    @property
    def num_kv_heads(self) -> int:
        return int(self.get("num_key_value_heads") or self.num_attention_heads)

    @property
    def head_dim(self) -> int:
        return int(self.get("head_dim") or self.hidden_size // self.num_attention_heads)

    @property
    def max_position_embeddings(self) -> int:
        return int(self.get("max_position_embeddings") or 2048)

    @property
    def torch_dtype(self) -> torch.dtype:
        name = self.get("torch_dtype") or self.get("dtype") or "float32"
        return _DTYPES.get(str(name), torch.float32)

    @property
    def tie_word_embeddings(self) -> bool:
        return bool(self.get("tie_word_embeddings", False))

    @property
    def quantization_config(self) -> Mapping[str, Any] | None:
        return self.hf.get("quantization_config")

    @property
    def eos_token_ids(self) -> tuple[int, ...]:
        """EOS ids from generation_config.json (preferred) or config.json; int or list in either."""
        raw = self.generation.get("eos_token_id", self.hf.get("eos_token_id"))
        if raw is None:
            return ()
        return tuple(int(x) for x in (raw if isinstance(raw, list) else [raw]))


def parse_dtype(name: str) -> torch.dtype:
    try:
        return _DTYPES[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; choose one of {sorted(_DTYPES)}") from None
