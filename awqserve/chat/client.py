"""A small streaming client for `/v1/chat/completions` on the standard library (http.client).

Why not httpx or openai: they would be new runtime dependencies for what is one POST and a line
reader. The stream is read line by line as it arrives; closing the generator (or an exception in
it, such as KeyboardInterrupt) closes the socket, which the server takes as a disconnect and aborts
the request.
"""
from __future__ import annotations

import http.client
import json
from dataclasses import dataclass
from typing import Any, Generator
from urllib.parse import urlsplit


class ChatError(Exception):
    """The server refused or failed a request; the message is the one of its error envelope."""


@dataclass(frozen=True)
class Delta:
    """One piece of a streamed reply (either text field may be empty)."""

    content: str = ""
    reasoning: str = ""
    finish_reason: str | None = None


def normalise_url(url: str) -> str:
    """'localhost:8000/v1/' -> 'http://localhost:8000' (the API paths are added per call)."""
    url = url.strip().rstrip("/")
    if "://" not in url:
        url = "http://" + url
    return url[: -len("/v1")] if url.endswith("/v1") else url


class ChatClient:
    """Talks to one server. Every call opens its own connection (no shared state between threads)."""

    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 600.0) -> None:
        self.base_url = normalise_url(base_url)
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self._https = parts.scheme == "https"
        self._host, self._port = parts.hostname, parts.port
        self._prefix = parts.path
        self._headers = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
        if api_key:
            self._headers["authorization"] = f"Bearer {api_key}"
        self.timeout = timeout

    def _connect(self, timeout: float | None = None) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        return cls(self._host, self._port, timeout=timeout or self.timeout)

    def get_json(self, path: str, timeout: float | None = None) -> tuple[int, Any]:
        """(status, decoded body) of a GET; raises OSError when the server cannot be reached."""
        conn = self._connect(timeout)
        try:
            conn.request("GET", self._prefix + path, headers=self._headers)
            resp = conn.getresponse()
            return resp.status, _decode(resp.read())
        finally:
            conn.close()

    def first_model(self) -> str:
        status, body = self.get_json("/v1/models")
        if status != 200:
            raise ChatError(_message(body, status))
        return str(body["data"][0]["id"])

    def stream_chat(self, body: dict[str, Any]) -> Generator[Delta, None, None]:
        """POST a streaming chat request and yield its deltas until `[DONE]`."""
        conn = self._connect()
        try:
            conn.request("POST", self._prefix + "/v1/chat/completions",
                         body=json.dumps({**body, "stream": True}).encode(), headers=self._headers)
            resp = conn.getresponse()
            if resp.status != 200:
                raise ChatError(_message(_decode(resp.read()), resp.status))
            for raw in resp:
                delta = parse_sse_line(raw.decode("utf-8", errors="replace"))
                if delta is _DONE:
                    return
                if isinstance(delta, Delta):
                    yield delta
        finally:
            conn.close()  # mid-stream: the server sees the disconnect and aborts the request


_DONE = object()


def parse_sse_line(line: str) -> Delta | object | None:
    """A chat-completion SSE line → Delta, `_DONE` for `[DONE]`, None for anything else (blank lines,
    comments, the usage chunk). An error event raises ChatError."""
    line = line.strip()
    if not line.startswith("data:"):
        return None
    data = line[len("data:"):].strip()
    if data == "[DONE]":
        return _DONE
    obj = json.loads(data)
    if "error" in obj:
        raise ChatError(_message(obj, None))
    choices = obj.get("choices") or []
    if not choices:
        return None
    d = choices[0].get("delta") or {}
    reasoning = d.get("reasoning_content") or d.get("reasoning") or ""
    return Delta(d.get("content") or "", reasoning, choices[0].get("finish_reason"))


def _decode(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", errors="replace")


def _message(body: Any, status: int | None) -> str:
    err = body.get("error") if isinstance(body, dict) else None
    text = str(err.get("message")) if isinstance(err, dict) else str(body)[:300]
    return f"{text} (HTTP {status})" if status else text
