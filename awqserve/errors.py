"""Exception types shared across awqserve. Each carries a message fit to show a user as-is."""
from __future__ import annotations


class AwqServeError(Exception):
    """Base class: an error whose message is complete and user-facing (no traceback needed)."""


class ModelLoadError(AwqServeError):
    """The model directory, its config or its weights cannot be loaded (names the file/tensor)."""


class UnsupportedError(AwqServeError):
    """The checkpoint or request uses a feature awqserve does not implement (names the feature)."""


class EngineDeadError(AwqServeError):
    """The engine loop has stopped; no further requests can be served."""


class RequestError(AwqServeError):
    """A per-request failure raised inside the engine (e.g. out of memory in a step)."""

    def __init__(self, message: str, *, status: int = 500, kind: str = "internal_error") -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
