"""The server as users start it: decode step compiled (no --enforce-eager), on the demo model.

Compiles two graphs (batch 1 and 2..8, `--max-num-seqs 8`): about two minutes on 2 cores the first
time, seconds once inductor's cache is warm. Checks that the compiled graphs are the ones serving
(direct calls, from the log), that /health named the compiling phase while starting, that greedy
answers match the eager session server's, and that a concurrent batch of streams completes with exact
token counts.
"""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Iterator

import pytest
from _startup import assert_phases_in_order
from conftest import COMPILED, ServerProcess, start_server

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def compiled_server(model_dir: Path) -> Iterator[ServerProcess]:
    proc = start_server(model_dir, [COMPILED, "--max-num-seqs", "8", "--log-level", "info"])
    yield proc
    proc.stop()


def _client(proc: ServerProcess) -> Any:
    from openai import OpenAI

    return OpenAI(base_url=proc.url + "/v1", api_key="unused", max_retries=0, timeout=300)


def test_health_shows_the_compiling_phase(compiled_server: ServerProcess) -> None:
    seen = assert_phases_in_order(compiled_server.startup_health, must_see=("loading_weights", "compiling"))
    assert seen.index("compiling") > seen.index("loading_weights")


def test_compiled_graphs_serve(compiled_server: ServerProcess) -> None:
    log = compiled_server.log_text()
    assert "decode step compiled for batch sizes [1, 2]" in log and "(direct calls)" in log, log[-2000:]


def test_compiled_greedy_answer_matches_eager(compiled_server: ServerProcess, client: Any, model_name: str) -> None:
    kw = dict(model=model_name, messages=QUESTION, max_tokens=12, temperature=0)
    compiled = _client(compiled_server).chat.completions.create(**kw).choices[0].message.content
    eager = client.chat.completions.create(**kw).choices[0].message.content
    assert "Paris" in compiled
    assert compiled == eager


def test_compiled_concurrent_streams(compiled_server: ServerProcess, model_name: str) -> None:
    from openai import AsyncOpenAI

    async def one(c: AsyncOpenAI, i: int) -> tuple[str, int]:
        stream = await c.chat.completions.create(
            model=model_name, messages=[{"role": "user", "content": f"Count to {i + 3}."}], max_tokens=24,
            temperature=0, stream=True, stream_options={"include_usage": True}, extra_body={"ignore_eos": True})
        text, usage = "", 0
        async for chunk in stream:
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
            if chunk.usage:
                usage = chunk.usage.completion_tokens
        return text, usage

    async def main() -> list[tuple[str, int]]:
        async with AsyncOpenAI(base_url=compiled_server.url + "/v1", api_key="unused", max_retries=0) as c:
            return await asyncio.gather(*(one(c, i) for i in range(6)))

    results = asyncio.run(main())
    assert all(usage == 24 and text for text, usage in results)
