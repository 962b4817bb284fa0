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


class InvalidRequestError(AwqServeError, ValueError):
    """A request the engine refuses before running it (the engine's validation, `InputProcessor`).

    `param` names the offending field in the engine's vocabulary (`prompt`, `max_tokens`, `logprobs`,
    `prompt_logprobs`, a SamplingParams field); the HTTP layer maps it onto its own field names.
    """

    def __init__(self, message: str, *, param: str | None = None, code: str = "invalid_value") -> None:
        super().__init__(message)
        self.param = param
        self.code = code


class ContextLengthError(InvalidRequestError):
    """The prompt (plus the requested completion) does not fit the context window."""

    def __init__(self, max_model_len: int, prompt_tokens: int, max_tokens: int | None) -> None:
        if max_tokens is None or prompt_tokens >= max_model_len:
            message = (f"the prompt has {prompt_tokens} tokens; max_model_len is {max_model_len}, "
                       "which leaves no room to generate")
        else:
            message = (f"the prompt has {prompt_tokens} tokens and max_tokens is {max_tokens}: "
                       f"{prompt_tokens + max_tokens} exceeds max_model_len {max_model_len}")
        param = "prompt" if max_tokens is None or prompt_tokens >= max_model_len else "max_tokens"
        super().__init__(message, param=param, code="context_length_exceeded")
        self.max_model_len = max_model_len
        self.prompt_tokens = prompt_tokens
        self.max_tokens = max_tokens
