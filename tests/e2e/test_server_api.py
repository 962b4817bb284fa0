"""Every endpoint against the real server with the official openai SDK; bodies validated against OpenAI's schemas."""
from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import Schemas, ServerProcess, sse_lines

MSG = [{"role": "user", "content": "What is the capital of France?"}]
LONG = {"ignore_eos": True}  # extra_body: fixed-length generations, independent of the model's EOS


def chat_prompt_tokens(tokenizer: Any, messages: list[dict[str, str]]) -> int:
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return len(tokenizer.encode(text, add_special_tokens=False))


def test_listens_before_the_model_is_ready(server: ServerProcess) -> None:
    first_status, first_body = server.startup_health[0]
    assert (first_status, first_body["status"]) == (503, "loading") or first_status == 200


def test_models(client: Any, http: httpx.Client, schemas: Schemas, model_name: str) -> None:
    listed = http.get("/v1/models").json()
    schemas.validate("ListModelsResponse", listed)
    assert [m.id for m in client.models.list().data] == [model_name]
    card = http.get(f"/v1/models/{model_name}").json()
    schemas.validate("Model", card)
    q = card["quantization"]
    assert q["method"] == "awq" and q["bits"] == 4 and q["format"] == "pack-quantized"
    assert isinstance(q["group_size"], int) and isinstance(q["symmetric"], bool) and card["max_model_len"] == 512
    assert client.models.retrieve(model_name).id == model_name


def test_chat_non_stream(client: Any, schemas: Schemas, tokenizer: Any, model_name: str) -> None:
    raw = client.chat.completions.with_raw_response.create(model=model_name, messages=MSG, max_tokens=8,
                                                           temperature=0, extra_body=LONG)
    resp = raw.parse()
    schemas.validate("CreateChatCompletionResponse", json.loads(raw.http_response.text))
    assert resp.object == "chat.completion" and resp.choices[0].message.role == "assistant"
    assert resp.choices[0].finish_reason == "length" and resp.usage.completion_tokens == 8
    assert resp.usage.prompt_tokens == chat_prompt_tokens(tokenizer, MSG)
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + 8
    h = raw.headers
    assert h["x-awqserve-quantization-method"] == "awq" and h["x-awqserve-quantization-bits"] == "4"
    assert int(h["x-awqserve-quantization-group-size"]) > 0 and h["x-request-id"]


def test_chat_stream_matches_non_stream(client: Any, http: httpx.Client, schemas: Schemas, tokenizer: Any,
                                        model_name: str) -> None:
    full = client.chat.completions.create(model=model_name, messages=MSG, max_tokens=6, temperature=0)
    body = {"model": model_name, "messages": MSG, "max_tokens": 6, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    with http.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = sse_lines(r)
    assert lines[-1] == "[DONE]"
    chunks = [json.loads(x) for x in lines[:-1]]
    for c in chunks:
        schemas.validate("CreateChatCompletionStreamResponse", c)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(c["usage"] is None for c in chunks[:-1]) and chunks[-1]["choices"] == []
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks[:-1])
    assert text == full.choices[0].message.content
    assert chunks[-2]["choices"][0]["finish_reason"] == full.choices[0].finish_reason
    assert chunks[-1]["usage"] == full.usage.model_dump(exclude_none=True)
    assert chunks[-1]["usage"]["prompt_tokens"] == chat_prompt_tokens(tokenizer, MSG)
    sdk = list(client.chat.completions.create(model=model_name, messages=MSG, max_tokens=6, temperature=0,
                                              stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in sdk if c.choices) == text


@pytest.mark.parametrize("form", ["text", "texts", "ids", "id_lists"])
def test_completions_prompt_forms(client: Any, schemas: Schemas, tokenizer: Any, model_name: str, form: str) -> None:
    ids = tokenizer.encode("The capital of France is")
    prompt: Any = {"text": "The capital of France is", "texts": ["Paris is", "Berlin is"], "ids": ids,
                   "id_lists": [ids[:2], ids[2:]]}[form]
    raw = client.completions.with_raw_response.create(model=model_name, prompt=prompt, max_tokens=4,
                                                      temperature=0, extra_body=LONG)
    resp = raw.parse()
    schemas.validate("CreateCompletionResponse", json.loads(raw.http_response.text))
    prompts = [prompt] if isinstance(prompt, str) or isinstance(prompt[0], int) else prompt
    assert len(resp.choices) == len(prompts) and [c.index for c in resp.choices] == list(range(len(prompts)))
    expected = sum(len(p) if isinstance(p, list) else len(tokenizer.encode(p)) for p in prompts)
    assert resp.usage.prompt_tokens == expected and resp.usage.completion_tokens == 4 * len(prompts)
    streamed = list(client.completions.create(model=model_name, prompt=prompt, max_tokens=4, temperature=0,
                                              stream=True, extra_body=LONG))
    finished = {c.choices[0].index: c.choices[0].finish_reason for c in streamed if c.choices[0].finish_reason}
    assert finished == {i: "length" for i in range(len(prompts))}
    if len(prompts) == 1:  # batched prompts may differ in the last bits (batch-dependent numerics): compare one
        assert "".join(c.choices[0].text for c in streamed) == resp.choices[0].text


def test_n2(client: Any, model_name: str) -> None:
    resp = client.chat.completions.create(model=model_name, messages=MSG, max_tokens=6, n=2, temperature=1.0,
                                          seed=1, extra_body=LONG)
    assert [c.index for c in resp.choices] == [0, 1] and resp.usage.completion_tokens == 12
    chunks = list(client.completions.create(model=model_name, prompt="Hello", max_tokens=3, n=2, stream=True,
                                            extra_body=LONG))
    finished = {c.choices[0].index for c in chunks if c.choices and c.choices[0].finish_reason}
    assert finished == {0, 1}


def test_stop_strings(client: Any, model_name: str) -> None:
    base = client.completions.create(model=model_name, prompt="The capital of France is", max_tokens=16,
                                     temperature=0, extra_body=LONG).choices[0].text
    k = next(i for i in range(2, len(base) - 3) if base[i:i + 3].strip() and base.find(base[i:i + 3]) == i)
    stop = base[k:k + 3]
    cut = client.completions.create(model=model_name, prompt="The capital of France is", max_tokens=16,
                                    temperature=0, stop=[stop, "\u2603never"], extra_body=LONG).choices[0]
    assert cut.text == base[:k] and cut.finish_reason == "stop"
    streamed = client.completions.create(model=model_name, prompt="The capital of France is", max_tokens=16,
                                         temperature=0, stop=stop, stream=True, extra_body=LONG)
    assert "".join(c.choices[0].text for c in streamed if c.choices) == base[:k]


def test_seed_reproducibility(client: Any, model_name: str) -> None:
    def run(seed: int) -> str:
        return client.completions.create(model=model_name, prompt="Once upon a time", max_tokens=8,
                                         temperature=1.0, seed=seed, extra_body=LONG).choices[0].text

    a, b, c = run(1234), run(1234), run(99)
    assert a == b and a != c


def test_logprobs_shapes(client: Any, schemas: Schemas, model_name: str) -> None:
    chat = client.chat.completions.create(model=model_name, messages=MSG, max_tokens=5, temperature=0,
                                          logprobs=True, top_logprobs=3, extra_body=LONG)
    content = chat.choices[0].logprobs.content
    assert len(content) == 5
    for item in content:
        assert item.logprob <= 0 and len(item.top_logprobs) == 3 and isinstance(item.bytes, list)
        assert item.top_logprobs[0].logprob >= item.top_logprobs[-1].logprob
    schemas.validate("CreateChatCompletionResponse", chat.model_dump(exclude_unset=True))
    comp = client.completions.create(model=model_name, prompt="Hello there", max_tokens=4, temperature=0,
                                     logprobs=2, extra_body=LONG).choices[0].logprobs
    assert len(comp.tokens) == len(comp.token_logprobs) == len(comp.top_logprobs) == len(comp.text_offset) == 4
    assert all(len(t) >= 1 for t in comp.top_logprobs) and comp.text_offset == sorted(comp.text_offset)
    echo = client.completions.create(model=model_name, prompt="Hello there", max_tokens=2, temperature=0,
                                     logprobs=1, echo=True, extra_body=LONG).choices[0]
    assert echo.text.startswith("Hello there") and echo.logprobs.token_logprobs[0] is None
    assert len(echo.logprobs.tokens) > 2


def test_default_max_tokens_is_remaining_context(http: httpx.Client, model_name: str) -> None:
    ids = http.post("/tokenize", json={"prompt": "hello " * 100}).json()["tokens"]
    ids = (ids * (512 // len(ids) + 1))[:512 - 3]  # leaves room for exactly 3 tokens
    r = http.post("/v1/completions", json={"model": model_name, "prompt": ids, "ignore_eos": True}).json()
    assert r["usage"] == {"prompt_tokens": 509, "completion_tokens": 3, "total_tokens": 512}
    assert r["choices"][0]["finish_reason"] == "length"


def test_tokenize_detokenize(http: httpx.Client, tokenizer: Any) -> None:
    t = http.post("/tokenize", json={"prompt": "Hello, world!"}).json()
    assert t["tokens"] == tokenizer.encode("Hello, world!") and t["count"] == len(t["tokens"])
    assert http.post("/detokenize", json={"tokens": t["tokens"]}).json()["prompt"].endswith("Hello, world!")
    chat = http.post("/tokenize", json={"messages": MSG}).json()
    assert chat["count"] == chat_prompt_tokens(tokenizer, MSG)


def test_health_and_version(http: httpx.Client, model_name: str) -> None:
    h = http.get("/health").json()
    assert h["status"] == "ok" and h["model"] == model_name and h["ready"] is True
    assert {"uptime_s", "queue_depth", "kv_cache_usage", "num_running"} <= set(h)
    assert http.get("/health/live").json() == {"status": "alive"}
    assert http.get("/health/ready").json() == {"status": "ready"}
    assert http.get("/version").json()["version"]


def _metrics(http: httpx.Client) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for fam in text_string_to_metric_families(http.get("/metrics").text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def _sum(m: dict, name: str, **labels: str) -> float:
    return sum(v for (n, lv), v in m.items() if n == name and set(labels.items()) <= lv)


def test_metrics_counters_move(http: httpx.Client, client: Any, model_name: str) -> None:
    before = _metrics(http)
    client.completions.create(model=model_name, prompt="Hi", max_tokens=3, extra_body=LONG)
    after = _metrics(http)
    lbl = {"model_name": model_name}
    assert _sum(after, "vllm:generation_tokens_total", **lbl) - _sum(before, "vllm:generation_tokens_total") >= 3
    assert _sum(after, "vllm:prompt_tokens_total", **lbl) > _sum(before, "vllm:prompt_tokens_total")
    assert _sum(after, "vllm:request_success_total", finished_reason="length", **lbl) > \
        _sum(before, "vllm:request_success_total", finished_reason="length")
    assert _sum(after, "vllm:e2e_request_latency_seconds_count") > _sum(before, "vllm:e2e_request_latency_seconds_count")
    for name in ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
                 "vllm:time_to_first_token_seconds_count", "vllm:inter_token_latency_seconds_count",
                 "vllm:request_queue_time_seconds_count", "vllm:num_preemptions_total"):
        assert any(n == name for n, _ in after), name


def test_debug_timings(http: httpx.Client, model_name: str) -> None:
    body = {"model": model_name, "messages": MSG, "max_tokens": 4, "ignore_eos": True}
    r = http.post("/v1/chat/completions", json=body, headers={"x-awqserve-debug": "1"})
    for h in ("x-awqserve-queue-ms", "x-awqserve-ttft-ms", "x-awqserve-decode-tokens-per-s"):
        assert float(r.headers[h]) >= 0
    with http.stream("POST", "/v1/chat/completions", json={**body, "stream": True},
                     headers={"x-awqserve-debug": "1"}) as s:
        last = json.loads(sse_lines(s)[-2])
    assert last["awqserve_timing"]["ttft_ms"] > 0
