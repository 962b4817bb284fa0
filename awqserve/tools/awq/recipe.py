"""A recorded AWQ search (`AwqResult.recipe`) on disk, so a known model is rebuilt without searching.

The demo model's build spends ~45 s of its ~60 s in the scale and clip search (2 cores). The search's
decisions are small — per layer the folded input scales (float32, one per input channel of each
scale group) and the clip ratio index per (row, group) of each clipped linear (uint8) — so they ship
with the package (`awqserve/data/demo_awq_recipe.npz`, 760 KB) and `run_awq(recipe=…)` replays them:
the same folds, clamps and rounding, no calibration pass, identical int4 weights.

Invariant: a recipe is used only when its metadata matches what it was recorded for (the source
file's sha256 and the AWQ options); anything else runs the full search.
"""
from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

META_KEY = "__meta__"


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_recipe(path: Path, recipe: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Write the recipe and its metadata as one compressed .npz (written whole, then renamed)."""
    arrays = {k: v.contiguous().numpy() for k, v in recipe.items()}
    arrays[META_KEY] = np.frombuffer(json.dumps(meta, sort_keys=True).encode(), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)  # type: ignore[arg-type]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(path)


def load_recipe(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(recipe, metadata) from a file written by `save_recipe`."""
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(bytes(data[META_KEY]).decode())
        recipe = {k: torch.from_numpy(data[k].copy()) for k in data.files if k != META_KEY}
    return recipe, meta
