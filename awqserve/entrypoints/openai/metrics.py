"""Prometheus metrics under vLLM's names and labels (`model_name`, `engine`), plus `awqserve:` extras.

Gauges and engine counters are read from `StatsHolder.snapshot()` at scrape time (a custom
collector), so they can never drift from the engine; per-request histograms are fed by a
`StatsListener` that the engine calls on its own thread (prometheus_client is thread-safe).
Each app owns its registry, so several servers can live in one process (tests).
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

if TYPE_CHECKING:
    from awqserve.engine.protocol import EngineClient
    from awqserve.entrypoints.openai.state import AppState

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LABELS = ["model_name", "engine"]
ENGINE_INDEX = "0"

_TTFT = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0,
         80.0, 160.0, 640.0, 2560.0]
_ITL = [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0]
_LATENCY = [0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0,
            960.0, 1920.0, 7680.0]


def token_buckets(limit: int = 1 << 20) -> list[float]:
    out, scale = [], 1
    while scale <= limit:
        out += [float(m * scale) for m in (1, 2, 5) if m * scale <= limit]
        scale *= 10
    return out


class ServerMetrics:
    """All collectors of one app. `attach(engine, name)` once the engine is ready."""

    def __init__(self, state: AppState) -> None:
        self.state = state
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry

        def h(name: str, doc: str, buckets: list[float]) -> Histogram:
            return Histogram(name, doc, LABELS, buckets=buckets, registry=r)

        self.ttft = h("vllm:time_to_first_token_seconds", "Time to first token.", _TTFT)
        self.itl = h("vllm:inter_token_latency_seconds", "Time between consecutive output tokens.", _ITL)
        self.e2e = h("vllm:e2e_request_latency_seconds", "End-to-end request latency.", _LATENCY)
        self.queue = h("vllm:request_queue_time_seconds", "Time spent waiting in the queue.", _LATENCY)
        self.prefill = h("vllm:request_prefill_time_seconds", "Time spent in prefill.", _LATENCY)
        self.decode = h("vllm:request_decode_time_seconds", "Time spent in decode.", _LATENCY)
        self.prompt_len = h("vllm:request_prompt_tokens", "Prompt tokens per request.", token_buckets())
        self.gen_len = h("vllm:request_generation_tokens", "Generated tokens per request.", token_buckets())
        self.http = Counter("awqserve:http_requests", "HTTP responses by route and status.",
                            ["method", "route", "status"], registry=r)
        self.rejects = Counter("awqserve:requests_rejected", "Requests refused at admission, by reason.",
                               ["reason"], registry=r)
        self.aborts = Counter("awqserve:requests_aborted", "Requests aborted after admission, by reason.",
                              ["reason"], registry=r)
        self.memory_warnings = Counter("awqserve:memory_warnings",
                                       "Times KV-cache usage crossed --memory-warning-threshold.", registry=r)
        r.register(_SnapshotCollector(self))
        self._children: dict[str, Any] = {}
        self.model_name: str | None = None

    # ---- wiring ----

    def attach(self, engine: EngineClient, model_name: str) -> None:
        self.model_name = model_name
        labels = {"model_name": model_name, "engine": ENGINE_INDEX}
        for name in ("ttft", "itl", "e2e", "queue", "prefill", "decode", "prompt_len", "gen_len"):
            self._children[name] = getattr(self, name).labels(**labels)
        engine.stats.listeners.append(self)

    def render(self) -> bytes:
        return generate_latest(self.exposed())

    def exposed(self) -> Any:
        """What a scrape sees: the registry, with a constant `replica` label on every series when this
        server is one replica of several (`ServerConfig.replica_id`)."""
        replica = self.state.config.replica_id
        return self.registry if replica is None else _ConstLabels(self.registry, {"replica": replica})

    # ---- StatsListener (engine thread) ----

    def on_step(self, *, num_prompt_tokens: int = 0, num_generation_tokens: int = 0,
                inter_token_latencies: list[float] | None = None, **_: Any) -> None:
        itl = self._children.get("itl")
        for dt in inter_token_latencies or []:
            if itl is not None:
                itl.observe(dt)

    def on_request_finished(self, *, finish_reason: str, prompt_tokens: int, generation_tokens: int,
                            queue_time: float, ttft: float | None, prefill_time: float | None,
                            decode_time: float | None, e2e_time: float, **_: Any) -> None:
        c = self._children
        if not c:
            return
        for key, value in (("queue", queue_time), ("ttft", ttft), ("prefill", prefill_time),
                           ("decode", decode_time), ("e2e", e2e_time), ("prompt_len", prompt_tokens),
                           ("gen_len", generation_tokens)):
            if value is not None:
                c[key].observe(value)

    # ---- server-side events ----

    def http_response(self, method: str, route: str, status: int) -> None:
        self.http.labels(method, route, str(status)).inc()

    def rejected(self, reason: str) -> None:
        self.rejects.labels(reason).inc()

    def aborted(self, reason: str) -> None:
        self.aborts.labels(reason).inc()


class _ConstLabels:
    """A registry view adding fixed labels to every sample (each collect() builds fresh metric objects,
    so rewriting their samples leaves the registry untouched)."""

    def __init__(self, registry: CollectorRegistry, labels: dict[str, str]) -> None:
        self.registry = registry
        self.labels = labels

    def collect(self) -> Iterator[Metric]:
        for metric in self.registry.collect():
            metric.samples = [s._replace(labels={**s.labels, **self.labels}) for s in metric.samples]
            yield metric


class _SnapshotCollector:
    """Gauges and engine counters straight from the engine's stats at scrape time."""

    def __init__(self, metrics: ServerMetrics) -> None:
        self.m = metrics

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        state = self.m.state
        yield _gauge("awqserve:engine_ready", "1 when the model is loaded and the engine runs.",
                     [], [], 1.0 if state.phase in ("ready", "draining") else 0.0)
        yield _gauge("awqserve:uptime_seconds", "Seconds since the server started.", [], [],
                     time.monotonic() - state.started_at)
        yield _gauge("awqserve:in_flight_requests", "HTTP requests currently generating.", [], [],
                     state.tracker.api_requests)
        if self.m.model_name is None or state.engine is None:
            return
        s = state.engine.stats.snapshot()
        lv = [self.m.model_name, ENGINE_INDEX]
        yield _gauge("vllm:num_requests_running", "Requests in the running batch.", LABELS, lv, s.num_running)
        yield _gauge("vllm:num_requests_waiting", "Requests waiting to be scheduled.", LABELS, lv, s.num_waiting)
        yield _gauge("vllm:kv_cache_usage_perc", "KV-cache usage (0-1).", LABELS, lv, s.kv_usage)
        yield _gauge("awqserve:kv_cache_bytes", "Bytes reserved for the KV cache.", LABELS, lv, s.kv_cache_bytes)
        yield _gauge("awqserve:state_cache_usage_perc", "Recurrent-state slot usage (0-1).", LABELS, lv,
                     s.state_usage)
        for name, doc, value in (
            ("vllm:prompt_tokens", "Prefill tokens processed.", s.prompt_tokens),
            ("vllm:generation_tokens", "Generation tokens produced.", s.generation_tokens),
            ("vllm:num_preemptions", "Preemptions.", s.num_preemptions),
            ("vllm:prefix_cache_queries", "Prefix-cache queries, in tokens.", s.prefix_cache_queries),
            ("vllm:prefix_cache_hits", "Prefix-cache hits, in tokens.", s.prefix_cache_hits),
        ):
            c = CounterMetricFamily(name, doc, labels=LABELS)
            c.add_metric(lv, value)
            yield c
        ok = CounterMetricFamily("vllm:request_success", "Finished requests by finish reason.",
                                 labels=[*LABELS, "finished_reason"])
        for reason in sorted({"stop", "length", "abort", *s.finished}):
            ok.add_metric([*lv, reason], s.finished.get(reason, 0))
        yield ok
        # No vLLM equivalent: requests that failed inside the engine, by cause (engine/faults.py kinds).
        failed = CounterMetricFamily("awqserve:request_failures", "Requests failed inside the engine, by reason.",
                                     labels=[*LABELS, "reason"])
        for reason in sorted({"internal_error", "out_of_memory", "nan_logits", "sampling_error", *s.failures}):
            failed.add_metric([*lv, reason], s.failures.get(reason, 0))
        yield failed
        yield from self._info(lv)

    def _info(self, lv: list[str]) -> Iterator[Metric]:
        engine = self.m.state.engine
        q = engine.info.quant_info if engine is not None and engine.info is not None else None
        if q is None:
            return
        names = ["quant_method", "quant_format", "bits", "group_size", "symmetric"]
        values = [str(q.method), str(q.format), str(q.bits), str(q.group_size), str(q.symmetric).lower()]
        yield _gauge("awqserve:model_info", "Quantization metadata of the served model (value 1).",
                     [*LABELS, *names], [*lv, *values], 1.0)


def _gauge(name: str, doc: str, labels: list[str], values: list[str], value: float) -> GaugeMetricFamily:
    g = GaugeMetricFamily(name, doc, labels=labels)
    g.add_metric(values, float(value))
    return g
