"""Edge controls: API-key check, per-client rate limits (token buckets) and OpenAI's rate-limit headers.

Rate limits are per client key: the bearer token (hashed, never stored raw) when one is sent, else the
client address. Requests are charged one at admission; tokens are charged as prompt tokens at
admission and completion tokens when the request ends, so a bucket may go negative and then blocks
that client until it refills. Buckets refill continuously (limit per minute → limit/60 per second).
"""
from __future__ import annotations

import hashlib
import hmac
import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Iterable

from awqserve.entrypoints.openai.errors import APIError


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def api_key_ok(token: str | None, keys: Iterable[str]) -> bool:
    """Constant-time comparison against every configured key (no early exit on a match)."""
    presented = (token or "").encode()
    ok = False
    for key in keys:
        ok |= hmac.compare_digest(presented, key.encode())
    return ok and token is not None


def client_key(token: str | None, client_host: str | None) -> str:
    if token:
        return "key:" + hashlib.sha256(token.encode()).hexdigest()[:16]
    return f"addr:{client_host or 'unknown'}"


def format_duration(seconds: float) -> str:
    """OpenAI's reset format: '12ms', '1.5s', '6m0s'."""
    seconds = max(0.0, seconds)
    if seconds < 1.0:
        return f"{int(math.ceil(seconds * 1000))}ms"
    minutes, rest = divmod(seconds, 60.0)
    secs = f"{rest:.3f}".rstrip("0").rstrip(".")
    return f"{int(minutes)}m{secs}s" if minutes >= 1 else f"{secs}s"


@dataclass
class TokenBucket:
    """`level` units available of `capacity`, refilled at `rate` per second; may go negative (debt)."""

    capacity: float
    rate: float
    level: float
    updated: float

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
        self.updated = now

    def seconds_until(self, amount: float) -> float:
        return max(0.0, (amount - self.level) / self.rate)

    def reset_seconds(self) -> float:
        return max(0.0, (self.capacity - self.level) / self.rate)


class RateLimiter:
    """Per-client request and token buckets; thread-safe (completion debits may come from any task)."""

    MAX_CLIENTS = 10_000  # least-recently-seen clients beyond this are forgotten (their buckets reset)

    def __init__(self, rpm: int | None, tpm: int | None, clock: Callable[[], float] = time.monotonic) -> None:
        self.rpm, self.tpm, self._clock = rpm, tpm, clock
        self._lock = threading.Lock()
        self._clients: OrderedDict[str, dict[str, TokenBucket]] = OrderedDict()

    def _buckets(self, key: str) -> dict[str, TokenBucket]:
        now = self._clock()
        buckets = self._clients.get(key)
        if buckets is None:
            buckets = {name: TokenBucket(limit, limit / 60.0, float(limit), now)
                       for name, limit in (("requests", self.rpm), ("tokens", self.tpm)) if limit is not None}
            self._clients[key] = buckets
            while len(self._clients) > self.MAX_CLIENTS:
                self._clients.popitem(last=False)
        self._clients.move_to_end(key)
        for bucket in buckets.values():
            bucket.refill(now)
        return buckets

    def acquire_request(self, key: str) -> None:
        """Charge one request, or raise 429 (with Retry-After) if the requests or tokens budget is spent."""
        with self._lock:
            buckets = self._buckets(key)
            req, tok = buckets.get("requests"), buckets.get("tokens")
            if req is not None and req.level < 1.0:
                raise _limited("requests", self.rpm, req.seconds_until(1.0))
            if tok is not None and tok.level <= 0.0:
                raise _limited("tokens", self.tpm, tok.seconds_until(1.0))
            if req is not None:
                req.level -= 1.0

    def debit_tokens(self, key: str, n: int) -> None:
        if self.tpm is None or n <= 0:
            return
        with self._lock:
            self._buckets(key)["tokens"].level -= n

    def headers(self, key: str) -> dict[str, str]:
        """The six x-ratelimit-* headers (a disabled limit reports no headers of its kind)."""
        with self._lock:
            buckets = self._buckets(key)
        out: dict[str, str] = {}
        for name, bucket in buckets.items():
            out[f"x-ratelimit-limit-{name}"] = str(int(bucket.capacity))
            out[f"x-ratelimit-remaining-{name}"] = str(max(0, int(math.floor(bucket.level))))
            out[f"x-ratelimit-reset-{name}"] = format_duration(bucket.reset_seconds())
        return out


def _limited(kind: str, limit: int | None, retry_after: float) -> APIError:
    msg = (f"Rate limit reached: {limit} {kind} per minute for this client. "
           f"Please retry after {format_duration(retry_after)}.")
    return APIError(429, msg, type=kind, code="rate_limit_exceeded", retry_after=retry_after)
