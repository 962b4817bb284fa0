"""The tiny Qwen3-Next AWQ checkpoint served by `awqserve serve` answers the official openai client.

The checkpoint is built here (tests/fixtures/build_tiny.py: compressed-tensors int4 g32 experts and
attention, bf16 GDN / shared experts / routers, byte-level tokenizer with a ChatML template). The
server runs its default CPU kernels (int4 with bf16 activations), so outputs are compared with each
other (stream vs non-stream, concurrent vs alone), and with a float32 transformers reference only by
the first greedy token, which has a wide margin on this model (checked before comparing).
"""
from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator

import pytest
import torch

from conftest import ServerProcess, start_server

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fixtures.build_tiny import TinyModel, build, load_reference  # noqa: E402

MSG = [{"role": "user", "content": "Tell me about gated delta networks."}]
FIXED = {"ignore_eos": True}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyModel:
    return build("qwen3_next", tmp_path_factory.mktemp("q3n_serve"))


@pytest.fixture(scope="module")
def q3n_server(tiny: TinyModel) -> Iterator[ServerProcess]:
    # a 32-token batch budget: the prompt below is prefilled in chunks that continue the GDN state
    # --weight-layout dense: the exact fp32 path, so "alone equals in a crowd" is a fair check on random
    # weights (the default layout switches kernels with the batch size: close, not bitwise equal)
    proc = start_server(tiny.awq_dir, ["--served-model-name", "tiny-qwen3-next", "--max-num-batched-tokens", "32",
                                       "--weight-layout", "dense"])
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def oai(q3n_server: ServerProcess) -> Any:
    from openai import OpenAI

    return OpenAI(base_url=q3n_server.url + "/v1", api_key="unused", max_retries=0, timeout=120)


def test_model_card_reports_awq(oai: Any, q3n_server: ServerProcess) -> None:
    import httpx

    assert [m.id for m in oai.models.list().data] == ["tiny-qwen3-next"]
    card = httpx.get(q3n_server.url + "/v1/models/tiny-qwen3-next").json()
    q = card["quantization"]
    assert (q["method"], q["format"], q["bits"], q["group_size"], q["symmetric"]) == (
        "awq", "pack-quantized", 4, 32, True)


def test_chat_stream_equals_non_stream(oai: Any) -> None:
    full = oai.chat.completions.create(model="tiny-qwen3-next", messages=MSG, max_tokens=24, temperature=0,
                                       extra_body=FIXED)
    assert full.choices[0].finish_reason == "length" and full.usage.completion_tokens == 24
    text = full.choices[0].message.content
    assert text and len(set(text)) > 3  # random weights, but not one repeated token
    stream = oai.chat.completions.create(model="tiny-qwen3-next", messages=MSG, max_tokens=24, temperature=0,
                                         stream=True, stream_options={"include_usage": True}, extra_body=FIXED)
    chunks = list(stream)
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == text
    assert chunks[-1].usage.completion_tokens == 24


def test_completion_first_token_matches_reference(oai: Any, tiny: TinyModel) -> None:
    """80-token prompt (three 32-token prefill chunks): the served greedy token is transformers' argmax.

    Picks a prompt whose reference argmax is a printable ASCII byte with a clear margin (a lone
    byte >= 0x80 is an incomplete UTF-8 sequence, which the detokenizer rightly holds back)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny.awq_dir))
    ref = load_reference(tiny)
    for start in range(0, 160, 8):
        prompt_ids = [(start + 7 * i) % 256 for i in range(80)]
        with torch.inference_mode():
            top2 = ref(torch.tensor([prompt_ids])).logits[0, -1].topk(2)
        best = tok.decode([int(top2.indices[0])])
        if len(best) == 1 and best.isascii() and best.isprintable() and float(top2.values[0] - top2.values[1]) > 0.2:
            break
    else:
        pytest.skip("no prompt with a clear printable greedy winner")
    resp = oai.completions.create(model="tiny-qwen3-next", prompt=prompt_ids, max_tokens=1, temperature=0,
                                  extra_body=FIXED)
    assert resp.usage.prompt_tokens == 80
    assert resp.choices[0].text == best


def test_concurrent_requests_each_complete(oai: Any) -> None:
    def ask(i: int) -> Any:
        return oai.completions.create(model="tiny-qwen3-next", prompt=f"request {i}: " + "x" * (5 * i),
                                      max_tokens=12, temperature=0, extra_body=FIXED)

    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(ask, range(6)))
    assert all(r.usage.completion_tokens == 12 and r.choices[0].finish_reason == "length" for r in results)
    # the same request alone gives the same greedy text as in the crowd (state slots don't leak)
    again = ask(3)
    assert again.choices[0].text == results[3].choices[0].text
