"""A server with API keys, rate limits and a one-slot queue: 401s, 429 + x-ratelimit-*, 503 + Retry-After."""
from __future__ import annotations

import concurrent.futures as cf
import time
from pathlib import Path
from typing import Iterator

import httpx
import openai
import pytest

from conftest import Schemas, ServerProcess, start_server

KEYS = {"a": "key-a", "b": "key-b", "env": "key-env"}
RPM = 8


@pytest.fixture(scope="module")
def guarded(model_dir: Path) -> Iterator[ServerProcess]:
    proc = start_server(model_dir, ["--api-key", KEYS["a"], "--api-key", KEYS["b"], "--max-num-seqs", "1",
                                    "--max-num-queued-reqs", "1", "--rate-limit-rpm", str(RPM),
                                    "--rate-limit-tpm", "1000000"],
                        env={"AWQSERVE_API_KEY": KEYS["env"]})
    yield proc
    proc.stop()


def auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def test_api_keys(guarded: ServerProcess, schemas: Schemas) -> None:
    with httpx.Client(base_url=guarded.url, timeout=60) as c:
        for headers in ({}, auth("wrong"), {"authorization": KEYS["a"]}):
            r = c.get("/v1/models", headers=headers)
            assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
            schemas.validate("ErrorResponse", r.json())
        assert c.post("/v1/completions", json={"prompt": "x"}).status_code == 401
        assert c.post("/tokenize", json={"prompt": "x"}).status_code == 401
        assert c.get("/v1/models", headers=auth(KEYS["env"])).status_code == 200  # from AWQSERVE_API_KEY
        for path in ("/health", "/health/live", "/health/ready", "/metrics"):
            assert c.get(path).status_code == 200, path
        for path in ("/version", "/openapi.json"):  # every route but probes, metrics and the page needs the key
            assert c.get(path).status_code == 401, path
            assert c.get(path, headers=auth(KEYS["env"])).status_code == 200, path
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=guarded.url + "/v1", api_key="wrong", max_retries=0).models.list()


def test_queue_overflow_gives_503_and_nothing_hangs(guarded: ServerProcess) -> None:
    with httpx.Client(base_url=guarded.url, timeout=120, headers=auth(KEYS["b"])) as c:
        def one(i: int) -> httpx.Response:
            return c.post("/v1/completions", json={"prompt": f"Story {i}:", "max_tokens": 12, "ignore_eos": True})

        with cf.ThreadPoolExecutor(6) as pool:
            results = list(pool.map(one, range(6)))
        codes = [r.status_code for r in results]
        assert set(codes) <= {200, 503} and codes.count(503) >= 1 and codes.count(200) >= 1, codes
        full = next(r for r in results if r.status_code == 503)
        assert full.json()["error"]["code"] == "queue_full" and int(full.headers["retry-after"]) >= 1
        deadline = time.monotonic() + 10
        while (h := c.get("/health").json())["in_flight"] or h["queue_depth"]:
            assert time.monotonic() < deadline, h
            time.sleep(0.05)


def test_rate_limit(guarded: ServerProcess) -> None:
    with httpx.Client(base_url=guarded.url, timeout=60, headers=auth(KEYS["a"])) as c:
        first = c.get("/v1/models")
        for name in ("requests", "tokens"):
            assert {f"x-ratelimit-{k}-{name}" for k in ("limit", "remaining", "reset")} <= set(first.headers)
        assert first.headers["x-ratelimit-limit-requests"] == str(RPM)
        remaining = int(first.headers["x-ratelimit-remaining-requests"])
        for _ in range(remaining):
            assert c.get("/v1/models").status_code == 200
        r = c.get("/v1/models")
        assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limit_exceeded"
        assert int(r.headers["retry-after"]) >= 1 and r.headers["x-ratelimit-remaining-requests"] == "0"
        assert r.headers["x-ratelimit-reset-requests"].endswith("s")
        with pytest.raises(openai.RateLimitError):
            openai.OpenAI(base_url=guarded.url + "/v1", api_key=KEYS["a"], max_retries=0).models.list()
        assert c.get("/v1/models", headers=auth(KEYS["env"])).status_code == 200  # another key: own budget
