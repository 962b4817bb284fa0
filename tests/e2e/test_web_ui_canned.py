"""The chat page in a real browser, for what the demo model never writes: canned server answers
(reasoning, tool calls, think tags, hostile HTML, errors, loading progress), and the --api-key prompt."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import pytest

from conftest import ServerProcess, start_server
from _browser import (DRAGON, KEY, LAST_REPLY, TIPS, Page, browser, sync_api)  # noqa: F401

pytestmark = pytest.mark.slow


# ---- what the demo model never writes: canned server answers (page.route) ----

def sse(*chunks: object) -> str:
    return "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"


def delta(**fields: object) -> dict[str, Any]:
    return {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": fields, "finish_reason": None}]}


@pytest.fixture()
def canned(browser: Any, server: ServerProcess) -> Iterator[Page]:
    p = Page(browser, server.url + "/")
    p.settings(max_tokens=16)
    yield p
    p.close()


def answer_with(p: Page, body: str, status: int = 200, headers: dict[str, str] | None = None) -> None:
    p.tab.unroute("**/v1/chat/completions")
    p.tab.route("**/v1/chat/completions", lambda route: route.fulfill(
        status=status, body=body, headers={"content-type": "text/event-stream" if status == 200 else "application/json",
                                           **(headers or {})}))


def test_reasoning_and_tool_calls(canned: Page) -> None:
    final = {"choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30},
             "awqserve_timing": {"queue_ms": 1.0, "ttft_ms": 50.0, "decode_tokens_per_s": 30.5, "e2e_ms": 700.0}}
    answer_with(canned, sse(
        delta(role="assistant", content=""), delta(reasoning_content="The user asks about weather. "),
        delta(reasoning_content="I should call the tool."),
        delta(tool_calls=[{"index": 0, "id": "call_1", "type": "function",
                           "function": {"name": "get_weather", "arguments": ""}}]),
        delta(tool_calls=[{"index": 0, "function": {"arguments": '{"city": '}}]),
        delta(tool_calls=[{"index": 0, "function": {"arguments": '"Paris"}'}}]),
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}, final))
    canned.send("Weather in Paris?", see_stop=False)
    canned.wait_idle()
    reply = canned.tab.locator(LAST_REPLY)
    thoughts = reply.locator("details.reasoning")
    assert thoughts.get_attribute("open") is None  # collapsed
    thoughts.locator("summary").click()
    body = thoughts.locator(".reasoning-body")
    sync_api.expect(body).to_have_text("The user asks about weather. I should call the tool.")
    sync_api.expect(reply.locator(".tool-name")).to_have_text("get_weather")
    assert json.loads(reply.locator(".tool-args").inner_text()) == {"city": "Paris"}
    sync_api.expect(reply.locator(".figures")).to_have_text("TTFT50 ms30.5 tok/s20 tokens")


def test_think_tags_in_content_and_markdown(canned: Page) -> None:
    answer_with(canned, sse(delta(content="<think>Short thought.</think>"), delta(content="A **bold** answer:\n\n"),
                            delta(content="```python\nprint('hi')\n```\n")))
    canned.send("Think first.", see_stop=False)
    canned.wait_idle()
    reply = canned.tab.locator(LAST_REPLY)
    sync_api.expect(reply.locator("details.reasoning .reasoning-body")).to_have_text("Short thought.")
    sync_api.expect(reply.locator(".content strong")).to_have_text("bold")
    sync_api.expect(reply.locator(".code-block .code-lang")).to_have_text("python")
    assert reply.locator(".code-block code.hljs span").count() > 0  # highlighted
    assert "<think>" not in reply.locator(".content").inner_text()


def test_model_html_is_sanitized(canned: Page) -> None:
    evil = ('Hi <img src="data:," onerror="window.__xss=1"> <script>window.__xss=2</script> '
            '[link](javascript:window.__xss=3) <a href="#" onclick="window.__xss=4">x</a> <iframe src="/"></iframe>')
    answer_with(canned, sse(delta(content=evil)))
    canned.send("Say something nasty.", see_stop=False)
    canned.wait_idle()
    content = canned.tab.locator(LAST_REPLY).locator(".content")
    content.locator("a").first.click()
    assert canned.tab.evaluate("() => window.__xss") is None
    html = content.inner_html()
    assert "onerror" not in html and "onclick" not in html and "<script" not in html and "<iframe" not in html
    assert "javascript:" not in html


def test_errors_are_shown_inline(canned: Page) -> None:
    envelope = {"error": {"message": "Too many requests.", "type": "requests", "param": None,
                          "code": "rate_limit_exceeded"}}
    answer_with(canned, json.dumps(envelope), status=429, headers={"retry-after": "7"})
    canned.send("Hello?", see_stop=False)
    canned.wait_idle()
    box = canned.tab.locator(LAST_REPLY).locator(".error-box")
    sync_api.expect(box).to_contain_text("Rate limited: Too many requests. Try again in 7 s.")
    oom = {"message": "Out of memory in a step.", "type": "server_error", "param": None, "code": "out_of_memory",
           "status": 503}
    answer_with(canned, sse(delta(content="Partial "), {"error": oom}))
    box.locator("button", has_text="Retry").click()
    canned.wait_idle()
    reply = canned.tab.locator(LAST_REPLY)
    sync_api.expect(reply.locator(".content")).to_have_text("Partial")
    sync_api.expect(reply.locator(".error-box")).to_contain_text("Out of memory in a step.")


def test_loading_progress_in_the_model_panel(browser: Any, server: ServerProcess) -> None:
    p = Page.__new__(Page)
    p.context = browser.new_context(viewport={"width": 1280, "height": 800})
    p.tab = p.context.new_page()
    body = {"status": "loading", "phase": "loading_weights", "progress": 0.42, "eta_s": 12.3}
    p.tab.route("**/health", lambda route: route.fulfill(status=503, body=json.dumps(body),
                                                           headers={"content-type": "application/json"}))
    try:
        p.url, p.errors = server.url + "/", []
        p.open()
        panel = p.tab.locator("#model-panel")
        sync_api.expect(panel.locator(".status-text")).to_have_text("loading…")
        sync_api.expect(panel).to_contain_text("loading weights")
        sync_api.expect(panel).to_contain_text("42%")
        sync_api.expect(panel).to_contain_text("about 13 s left")
    finally:
        p.close()


# ---- --api-key: the page loads, asks for the key, then works ----

@pytest.fixture(scope="module")
def keyed(model_dir: Path) -> Iterator[ServerProcess]:
    proc = start_server(model_dir, ["--api-key", KEY])
    yield proc
    proc.stop()


def test_api_key_prompt(browser: Any, keyed: ServerProcess) -> None:
    p = Page(browser, keyed.url + "/")
    try:
        dialog = p.tab.locator("#key-dialog")
        sync_api.expect(dialog).to_be_visible()  # the model card answered 401
        dialog.locator("button[value=cancel]").click()
        sync_api.expect(p.tab.locator("#model-panel")).to_contain_text("need the API key")
        p.settings(temperature=0, max_tokens=16)
        p.tab.fill("#prompt", "What is the capital of France?")
        p.tab.press("#prompt", "Enter")
        sync_api.expect(dialog).to_be_visible()  # the chat request answered 401
        p.tab.fill("#key-input", KEY)
        p.tab.click("#key-save")
        p.wait_idle()
        assert p.reply_length() > 0 and not p.tab.locator(".error-box").count()
        sync_api.expect(p.tab.locator("#model-panel .status-text")).to_have_text("ready")
        sync_api.expect(p.tab.locator("#model-panel")).not_to_contain_text("need the API key")
        assert [e for e in p.errors if "401" not in e] == []  # the browser logs the 401s themselves
    finally:
        p.close()
