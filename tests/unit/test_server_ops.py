"""Operability on the fake engine: loading/readiness, auth, rate limits, queue bound, timeouts, drain, metrics."""
from __future__ import annotations

import concurrent.futures as cf
import signal
import threading
import time

import httpx
from prometheus_client.parser import text_string_to_metric_families

from awqserve.entrypoints.openai.server_config import ServerConfig
from server_harness import run_server

MSG = [{"role": "user", "content": "hello"}]


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(metrics: dict, name: str, **labels: str) -> float:
    return sum(v for (n, lv), v in metrics.items() if n == name and set(labels.items()) <= set(lv))


def test_listens_while_loading_then_ready() -> None:
    with run_server(wait_ready=False, load_delay=1.0) as s, s.client() as c:
        h = c.get("/health")
        body = h.json()
        assert h.status_code == 503 and body["status"] == "loading" and 0.0 <= body["progress"] <= 1.0
        assert body["phase"] in ("starting", "loading_weights")  # "starting" until the engine object exists
        assert c.get("/health/ready").status_code == 503 and c.get("/health/live").status_code == 200
        r = c.post("/v1/completions", json={"prompt": "a"})
        assert r.status_code == 503 and r.json()["error"]["code"] == "model_loading" and r.headers["retry-after"]
        deadline = time.monotonic() + 10
        while c.get("/health").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert c.get("/health/ready").json() == {"status": "ready"}


def test_dead_engine_reports_503() -> None:
    with run_server() as s, s.client() as c:
        assert c.post("/v1/completions", json={"prompt": "__die__", "max_tokens": 3}).status_code == 503
        h = c.get("/health")
        assert h.status_code == 503 and h.json()["status"] == "dead" and "error" in h.json()
        assert c.get("/health/ready").status_code == 503 and c.get("/health/live").status_code == 200
        assert c.post("/v1/completions", json={"prompt": "a"}).json()["error"]["code"] == "engine_dead"


def test_api_keys() -> None:
    with run_server(ServerConfig(api_keys=("k1", "k2"))) as s, s.client() as c:
        for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": "k1"}):
            r = c.get("/v1/models", headers=headers)
            assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        assert c.get("/v1/models", headers={"authorization": "Bearer k2"}).status_code == 200
        assert c.post("/tokenize", json={"prompt": "a"}).status_code == 401
        for open_path in ("/health", "/health/live", "/health/ready", "/metrics"):
            assert c.get(open_path).status_code == 200
        for closed in ("/version", "/openapi.json", "/no-such-route"):  # not even which routes exist
            assert c.get(closed).status_code == 401
    with run_server(ServerConfig(api_keys=("k",), protect_metrics=True)) as s, s.client() as c:
        assert c.get("/metrics").status_code == 401
        assert c.get("/metrics", headers={"authorization": "Bearer k"}).status_code == 200


def test_rate_limit_headers_and_429() -> None:
    with run_server(ServerConfig(rate_limit_rpm=3, rate_limit_tpm=60)) as s, s.client() as c:
        r = c.post("/v1/completions", json={"prompt": "ab", "max_tokens": 2})
        assert r.status_code == 200
        assert r.headers["x-ratelimit-limit-requests"] == "3" and r.headers["x-ratelimit-remaining-requests"] == "2"
        assert 55 <= int(r.headers["x-ratelimit-remaining-tokens"]) <= 57  # 2 prompt + 2 completion tokens
        assert r.headers["x-ratelimit-reset-requests"].endswith("s")
        c.get("/v1/models")
        c.get("/v1/models", headers={"authorization": "Bearer other"})  # another client, own budget
        assert c.get("/v1/models").status_code == 200
        r = c.get("/v1/models")
        assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limit_exceeded"
        assert int(r.headers["retry-after"]) >= 1 and r.headers["x-ratelimit-remaining-requests"] == "0"
        assert "x-ratelimit-limit-requests" not in c.get("/health").headers


def test_queue_full_gives_503_and_nothing_hangs() -> None:
    from awqserve.config.engine_config import EngineConfig

    cfg = ServerConfig(max_num_queued_reqs=1)
    with run_server(cfg, EngineConfig(max_model_len=256, max_num_seqs=1), step_delay=0.01) as s, s.client() as c:
        def one(i: int) -> httpx.Response:
            return c.post("/v1/completions", json={"prompt": f"p{i}", "max_tokens": 20})

        with cf.ThreadPoolExecutor(6) as pool:
            results = list(pool.map(one, range(6)))
        codes = sorted(r.status_code for r in results)
        assert codes.count(503) >= 1 and codes.count(200) >= 2 and set(codes) <= {200, 503}
        full = next(r for r in results if r.status_code == 503)
        assert full.json()["error"]["code"] == "queue_full" and full.headers["retry-after"] == "1"
        assert s.state.tracker.api_requests == 0 and not s.engine._waiting and not s.engine._running


def test_request_timeout() -> None:
    with run_server(ServerConfig(request_timeout=0.3), step_delay=0.02) as s, s.client() as c:
        r = c.post("/v1/completions", json={"prompt": "a", "max_tokens": 200})
        assert r.status_code == 504 and r.json()["error"]["code"] == "request_timeout"
        with c.stream("POST", "/v1/completions", json={"prompt": "a", "max_tokens": 200, "stream": True}) as st:
            lines = [x for x in st.iter_lines() if x.startswith("data: ")]
        assert lines[-1] == "data: [DONE]" and '"request_timeout"' in lines[-2]
        assert s.state.tracker.api_requests == 0


def test_metrics_move_and_disable() -> None:
    with run_server() as s, s.client() as c:
        before = samples(c.get("/metrics").text)
        c.post("/v1/completions", json={"prompt": "abc", "max_tokens": 4})
        after = samples(c.get("/metrics").text)
        name = s.state.model_name
        assert value(after, "vllm:prompt_tokens_total") - value(before, "vllm:prompt_tokens_total") == 3
        assert value(after, "vllm:generation_tokens_total") - value(before, "vllm:generation_tokens_total") == 4
        assert value(after, "vllm:request_success_total", finished_reason="length", model_name=name) == 1
        assert value(after, "vllm:e2e_request_latency_seconds_count") == 1
        assert value(after, "vllm:num_requests_running") == 0
        assert value(after, "awqserve:http_requests_total", route="/v1/completions", status="200") == 1
        assert value(after, "awqserve:model_info", bits="4", quant_method="awq") == 1
    with run_server(ServerConfig(disable_metrics=True)) as s, s.client() as c:
        r = c.get("/metrics")
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def test_memory_warning_header() -> None:
    with run_server(ServerConfig(memory_warning_threshold=0.5), kv_usage=0.75) as s, s.client() as c:
        assert "75%" in c.get("/health").headers["x-awqserve-memory-warning"]
    with run_server(kv_usage=0.2) as s, s.client() as c:
        assert "x-awqserve-memory-warning" not in c.get("/health").headers


def test_cors() -> None:
    with run_server(ServerConfig(allowed_origins=("http://ui.example",), api_keys=("k",))) as s, s.client() as c:
        pre = c.options("/v1/chat/completions", headers={"origin": "http://ui.example",
                                                         "access-control-request-method": "POST"})
        assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == "http://ui.example"
        r = c.get("/v1/models", headers={"origin": "http://ui.example"})
        assert r.status_code == 401 and r.headers["access-control-allow-origin"] == "http://ui.example"


def test_drain_finishes_in_flight_then_exits() -> None:
    with run_server(ServerConfig(shutdown_timeout=10), step_delay=0.01) as s, s.client() as c:
        result: dict[str, object] = {}

        def stream() -> None:
            with httpx.Client(base_url=s.url, timeout=30) as own, own.stream(
                    "POST", "/v1/completions", json={"prompt": "a", "max_tokens": 60, "stream": True}) as r:
                result["lines"] = [x for x in r.iter_lines() if x.startswith("data: ")]

        t = threading.Thread(target=stream)
        t.start()
        while s.state.tracker.api_requests == 0:
            time.sleep(0.01)
        s.server.handle_exit(signal.SIGTERM, None)
        time.sleep(0.05)
        assert c.get("/health/ready").status_code == 503
        r = c.post("/v1/completions", json={"prompt": "a"})
        assert r.status_code == 503 and r.json()["error"]["code"] == "shutting_down"
        t.join(10)
        lines = result["lines"]
        assert isinstance(lines, list) and lines[-1] == "data: [DONE]" and '"finish_reason":"length"' in lines[-2]
        deadline = time.monotonic() + 10
        while not s.server.should_exit:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert s.server.exit_code == 0


def test_drain_timeout_aborts_streams() -> None:
    with run_server(ServerConfig(shutdown_timeout=0.2), step_delay=0.02) as s:
        with httpx.Client(base_url=s.url, timeout=30) as c, c.stream(
                "POST", "/v1/completions", json={"prompt": "a", "max_tokens": 250, "stream": True}) as r:
            it = r.iter_lines()
            next(it)
            s.server.handle_exit(signal.SIGTERM, None)
            lines = [x for x in it if x.startswith("data: ")]
        assert lines[-1] == "data: [DONE]" and '"shutting_down"' in lines[-2]


def test_disconnect_while_queued_frees_the_slot() -> None:
    from awqserve.config.engine_config import EngineConfig

    with run_server(engine_config=EngineConfig(max_model_len=256, max_num_seqs=1), step_delay=0.02) as s:
        with httpx.Client(base_url=s.url, timeout=30) as a, a.stream(
                "POST", "/v1/completions", json={"prompt": "a", "max_tokens": 100, "stream": True}) as running:
            lines = running.iter_lines()  # keep a reference: a discarded iterator closes the response
            next(lines)
            with httpx.Client(base_url=s.url, timeout=30) as b, b.stream(
                    "POST", "/v1/completions", json={"prompt": "b", "max_tokens": 5, "stream": True}) as queued:
                assert queued.status_code == 200
                deadline = time.monotonic() + 5
                while len(s.engine._waiting) != 1:
                    assert time.monotonic() < deadline
                    time.sleep(0.01)
            deadline = time.monotonic() + 5  # the queued request is gone before the running one ends
            while s.engine._waiting or s.state.tracker.api_requests != 1:
                assert time.monotonic() < deadline, (s.engine._waiting, s.state.tracker.api_requests)
                time.sleep(0.01)
