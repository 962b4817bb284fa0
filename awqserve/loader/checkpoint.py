"""Safetensors checkpoint access: single file or sharded index, lazy mmap reads, consumption tracking.

Headers are parsed directly (8-byte little-endian length + JSON) when the reader opens, which
finds every tensor's file, validates truncation against the declared data offsets, and serves
`header_info()` without touching tensor data. Tensor data is read one tensor at a time through
`safetensors.safe_open` (mmap), so the checkpoint is never held in memory twice. The reader counts
the stored bytes it has handed out and reports them (with the shards opened so far) through an
optional `on_read(done, total, detail)` callback: a start-up progress bar for a 45 GB checkpoint.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from safetensors import SafetensorError, safe_open

from awqserve.errors import ModelLoadError

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
_MAX_HEADER_BYTES = 100 * 1024 * 1024  # the format's own limit; larger means garbage
ReadProgress = Callable[[float, float, str], None]  # (bytes read, bytes in the checkpoint, "shard k/n")


def read_header(path: Path) -> dict[str, dict[str, Any]]:
    """Tensor name -> {"dtype", "shape", "data_offsets"} from a safetensors header; validates sizes."""
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            raw_len = f.read(8)
            if len(raw_len) < 8:
                raise ModelLoadError(f"{path} is not a safetensors file (too short: {size} bytes)")
            (n,) = struct.unpack("<Q", raw_len)
            if n > min(_MAX_HEADER_BYTES, size - 8):
                raise ModelLoadError(f"{path} is corrupt or truncated (header claims {n} bytes, file has {size})")
            header = json.loads(f.read(n))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"{path} is corrupt: cannot read its safetensors header ({e})") from None
    if not isinstance(header, dict):
        raise ModelLoadError(f"{path} is corrupt: safetensors header is not a JSON object")
    header.pop("__metadata__", None)
    try:
        end = max((int(v["data_offsets"][1]) for v in header.values()), default=0)
    except (KeyError, TypeError, ValueError, IndexError):
        raise ModelLoadError(f"{path} is corrupt: malformed tensor entry in its safetensors header") from None
    if 8 + n + end > size:
        raise ModelLoadError(f"{path} is truncated: its header needs {8 + n + end} bytes, the file has {size}")
    return header


class CheckpointReader:
    """Read-once view over a model directory's safetensors weights.

    `get` marks a tensor consumed; `unconsumed()` lists what nobody asked for, so the loader can
    be strict. Handles are opened on first use and released by `close()` (or the context manager).
    `bytes_read` counts each consumed tensor's stored bytes once; it reaches `total_bytes` only if
    every tensor is read (ignored and tied tensors are not).
    """

    def __init__(self, model_dir: str | Path, on_read: ReadProgress | None = None) -> None:
        self.model_dir = Path(model_dir)
        self.files = self._find_files()
        self._headers = {f: read_header(f) for f in self.files}
        self._where: dict[str, Path] = {}
        for f, header in self._headers.items():
            for name in header:
                self._where.setdefault(name, f)
        self._check_index()
        self._handles: dict[Path, Any] = {}
        self._consumed: set[str] = set()
        self._opened: set[Path] = set()
        self._on_read = on_read
        self.bytes_read = 0
        self.total_bytes = sum(self._nbytes(name) for name in self._where)

    # -- discovery ---------------------------------------------------------------------------
    def _find_files(self) -> list[Path]:
        d = self.model_dir
        if not d.is_dir():
            raise ModelLoadError(f"model directory {d} does not exist")
        index = d / INDEX_FILE
        if index.exists():
            shards = sorted(set(self._weight_map(index).values()))
            missing = [s for s in shards if not (d / s).is_file()]
            if missing:
                raise ModelLoadError(f"{index} lists shard(s) missing from {d}: {', '.join(missing)}")
            return [d / s for s in shards]
        if (d / SINGLE_FILE).is_file():
            return [d / SINGLE_FILE]
        found = sorted(d.glob("*.safetensors"))
        if found:
            return found
        raise ModelLoadError(f"no safetensors weights in {d} (expected {SINGLE_FILE} or {INDEX_FILE})")

    @staticmethod
    def _weight_map(index: Path) -> dict[str, str]:
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
            raise ModelLoadError(f"{index} is not a valid safetensors index ({type(e).__name__}: {e})") from None
        if not isinstance(weight_map, dict):
            raise ModelLoadError(f"{index}: 'weight_map' is not an object")
        return {str(k): str(v) for k, v in weight_map.items()}

    def _check_index(self) -> None:
        index = self.model_dir / INDEX_FILE
        if not index.exists():
            return
        for name, shard in self._weight_map(index).items():
            if name not in self._headers[self.model_dir / shard]:
                raise ModelLoadError(f"{index} maps tensor {name!r} to {shard}, which does not contain it")

    # -- access ------------------------------------------------------------------------------
    def keys(self) -> list[str]:
        return list(self._where)

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def has(self, name: str) -> bool:
        return name in self._where

    def header_info(self) -> dict[str, tuple[str, tuple[int, ...]]]:
        """Tensor name -> (safetensors dtype string such as "BF16", shape), from headers only."""
        return {name: (str(self._headers[f][name]["dtype"]), tuple(int(x) for x in self._headers[f][name]["shape"]))
                for name, f in self._where.items()}

    def shape(self, name: str) -> tuple[int, ...]:
        self._require(name)
        return tuple(int(x) for x in self._headers[self._where[name]][name]["shape"])

    def dtype_name(self, name: str) -> str:
        """The stored dtype of `name` as safetensors spells it ("BF16", "F32", …), from the header."""
        self._require(name)
        return str(self._headers[self._where[name]][name]["dtype"])

    def get(self, name: str) -> torch.Tensor:
        """Read one tensor (a fresh CPU tensor) and mark it consumed."""
        self._require(name)
        path = self._where[name]
        try:
            tensor: torch.Tensor = self._handle(path).get_tensor(name)
        except (SafetensorError, OSError, RuntimeError, ValueError) as e:
            raise ModelLoadError(f"cannot read tensor {name!r} from {path}: {e}") from None
        if name not in self._consumed:
            self._consumed.add(name)
            self.bytes_read += self._nbytes(name)
            if self._on_read is not None:
                self._on_read(self.bytes_read, self.total_bytes, f"shard {len(self._opened)}/{len(self.files)}")
        return tensor

    def _nbytes(self, name: str) -> int:
        start, end = self._headers[self._where[name]][name]["data_offsets"]
        return int(end) - int(start)

    def unconsumed(self) -> list[str]:
        return [n for n in self._where if n not in self._consumed]

    def close(self) -> None:
        self._handles.clear()

    def __enter__(self) -> "CheckpointReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _require(self, name: str) -> None:
        if name not in self._where:
            raise ModelLoadError(f"tensor {name!r} is missing from the checkpoint in {self.model_dir}")

    def _handle(self, path: Path) -> Any:
        if path not in self._handles:
            try:
                self._handles[path] = safe_open(str(path), framework="pt", device="cpu")
                self._opened.add(path)
            except (SafetensorError, OSError, RuntimeError, ValueError) as e:
                raise ModelLoadError(f"{path} is not a readable safetensors file: {e}") from None
        return self._handles[path]
