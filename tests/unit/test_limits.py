"""Rate limiter buckets, OpenAI's reset-duration format, and the API-key check."""
from __future__ import annotations

import pytest

from awqserve.entrypoints.openai.errors import APIError
from awqserve.entrypoints.openai.limits import RateLimiter, api_key_ok, bearer_token, client_key, format_duration


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.mark.parametrize("seconds, text", [(0.012, "12ms"), (1.0, "1s"), (1.5, "1.5s"), (360.0, "6m0s"),
                                           (61.25, "1m1.25s"), (0.0, "0ms")])
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_requests_bucket_limits_and_refills() -> None:
    clock = Clock()
    rl = RateLimiter(rpm=2, tpm=None, clock=clock)
    rl.acquire_request("a")
    rl.acquire_request("a")
    with pytest.raises(APIError) as info:
        rl.acquire_request("a")
    err = info.value
    assert err.status == 429 and err.type == "requests" and err.code == "rate_limit_exceeded"
    assert err.retry_after == pytest.approx(30.0)  # 2 per minute: one comes back every 30 s
    assert err.response_headers()["retry-after"] == "30"
    rl.acquire_request("b")  # other clients are independent
    clock.t += 30
    rl.acquire_request("a")
    h = rl.headers("a")
    assert h["x-ratelimit-limit-requests"] == "2" and h["x-ratelimit-remaining-requests"] == "0"
    assert h["x-ratelimit-reset-requests"] == "1m0s"
    assert "x-ratelimit-limit-tokens" not in h


def test_token_bucket_goes_into_debt_and_blocks() -> None:
    clock = Clock()
    rl = RateLimiter(rpm=100, tpm=60, clock=clock)
    rl.acquire_request("k")
    rl.debit_tokens("k", 90)  # 30 in debt
    with pytest.raises(APIError) as info:
        rl.acquire_request("k")
    assert info.value.type == "tokens" and info.value.retry_after == pytest.approx(31.0)
    h = rl.headers("k")
    assert h["x-ratelimit-remaining-tokens"] == "0" and h["x-ratelimit-limit-tokens"] == "60"
    assert set(h) == {f"x-ratelimit-{a}-{b}" for a in ("limit", "remaining", "reset") for b in ("requests", "tokens")}
    clock.t += 31
    rl.acquire_request("k")


def test_api_key_checks() -> None:
    assert bearer_token("Bearer abc") == "abc" and bearer_token("bearer  abc ") == "abc"
    assert bearer_token("Basic abc") is None and bearer_token(None) is None and bearer_token("Bearer ") is None
    assert api_key_ok("k2", ["k1", "k2"]) and not api_key_ok("k3", ["k1", "k2"]) and not api_key_ok(None, ["k1"])
    assert client_key("secret", "1.2.3.4").startswith("key:") and "secret" not in client_key("secret", None)
    assert client_key(None, "1.2.3.4") == "addr:1.2.3.4"
