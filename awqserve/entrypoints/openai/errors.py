"""OpenAI's error envelope and the exception handlers that produce it for every failure path.

Every error body is `{"error": {"message", "type", "param", "code"}}` with all four keys present.
Handlers raise `APIError` (or one of the helpers below); anything else becomes a 500 envelope.
"""
from __future__ import annotations

import json
import logging
import math
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response

logger = logging.getLogger("awqserve.server")

_DEFAULT_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 404: "invalid_request_error",
                  405: "invalid_request_error", 413: "invalid_request_error", 422: "invalid_request_error",
                  429: "requests", 500: "server_error", 503: "server_error", 504: "timeout_error"}


class APIError(Exception):
    """An error with its HTTP status and envelope fields; `retry_after` (seconds) adds Retry-After."""

    def __init__(self, status: int, message: str, *, type: str | None = None, param: str | None = None,
                 code: str | None = None, retry_after: float | None = None,
                 headers: dict[str, str] | None = None) -> None:
        message = scrub(message) if status >= 500 else message
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type or _DEFAULT_TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
        self.param = param
        self.code = code
        self.retry_after = retry_after
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)

    def response_headers(self) -> dict[str, str]:
        headers = dict(self.headers)
        if self.retry_after is not None:
            headers["retry-after"] = str(max(1, math.ceil(self.retry_after)))
        return headers

    def to_response(self) -> Response:
        return JSONResponse(self.body(), status_code=self.status, headers=self.response_headers())


_PATH = re.compile(r"(?:[A-Za-z]:)?(?:[\\/][\w.@+-]+){2,}[\\/]?")
_MAX_SERVER_MESSAGE = 1000


def scrub(text: str) -> str:
    """A server-side failure's text as a client may see it: no traceback, no file-system paths (they
    say how the machine is laid out), bounded length. The full error goes to the server log."""
    text = text.split("Traceback (most recent call last)", 1)[0].strip()
    text = _PATH.sub("<path>", text)
    return text if len(text) <= _MAX_SERVER_MESSAGE else text[:_MAX_SERVER_MESSAGE] + "..."


def error_body(message: str, type: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def error_json_bytes(status: int, message: str, code: str | None = None, param: str | None = None) -> bytes:
    """The envelope as bytes, for pure-ASGI middleware that answers before routing."""
    err = APIError(status, message, code=code, param=param)
    return json.dumps(err.body()).encode()


# ---- the common cases, so call sites read as what went wrong ----

def bad_request(message: str, *, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


def unsupported_parameter(param: str, why: str = "") -> APIError:
    tail = f" {why}" if why else ""
    return APIError(400, f"Unsupported parameter: '{param}' is not supported by this server.{tail}",
                    param=param, code="unsupported_parameter")


def model_not_found(model: str, available: list[str]) -> APIError:
    return APIError(404, f"The model '{model}' does not exist. Available models: {', '.join(available)}.",
                    param="model", code="model_not_found")


def service_unavailable(message: str, code: str, retry_after: float = 1.0) -> APIError:
    return APIError(503, message, code=code, retry_after=retry_after)


def context_length_exceeded(max_len: int, prompt_tokens: int, max_tokens: int | None, param: str) -> APIError:
    """400 whose message contains "maximum context length is N tokens" (clients match on it) plus a hint."""
    if max_tokens is None:
        msg = (f"This model's maximum context length is {max_len} tokens. However, your {param} resulted in "
               f"{prompt_tokens} tokens, leaving no room for a completion. Please shorten the {param}.")
    else:
        msg = (f"This model's maximum context length is {max_len} tokens. However, you requested "
               f"{prompt_tokens + max_tokens} tokens ({prompt_tokens} in the {param}, {max_tokens} in the "
               f"completion). Please shorten the {param} or lower max_tokens (at most "
               f"{max(max_len - prompt_tokens, 0)} for this prompt).")
        param = "max_tokens" if prompt_tokens < max_len else param
    return APIError(400, msg, param=param, code="context_length_exceeded")


def prompt_too_long(max_len: int, min_tokens: int, chars: int, param: str) -> APIError:
    """Like `context_length_exceeded`, decided from the text's length before tokenizing it (a huge
    prompt must not hold the event loop while it is tokenized)."""
    msg = (f"This model's maximum context length is {max_len} tokens. However, your {param} ({chars} "
           f"characters) would be at least {min_tokens} tokens. Please shorten the {param}.")
    return APIError(400, msg, param=param, code="context_length_exceeded")


# ---- exception handlers ----

async def _api_error_handler(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, APIError)
    return exc.to_response()


async def _http_exception_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 404:
        msg = f"Unknown route: {request.method} {request.url.path}"
        return APIError(404, msg, code="not_found").to_response()
    if exc.status_code == 405:
        msg = f"Method {request.method} is not allowed on {request.url.path}"
        resp = APIError(405, msg, code="method_not_allowed", headers=dict(exc.headers or {})).to_response()
        return resp
    return APIError(exc.status_code, str(exc.detail), headers=dict(exc.headers or {})).to_response()


async def _validation_handler(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    from awqserve.entrypoints.openai.protocol import validation_error

    return validation_error(list(exc.errors())).to_response()


async def _unhandled_handler(request: Request, exc: Exception) -> Response:
    logger.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    msg = f"Internal server error: {type(exc).__name__}: {exc}"
    return APIError(500, msg, code="internal_error").to_response()


def install_exception_handlers(app: FastAPI) -> None:
    app.add_exception_handler(APIError, _api_error_handler)
    app.add_exception_handler(StarletteHTTPException, _http_exception_handler)
    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.add_exception_handler(Exception, _unhandled_handler)
