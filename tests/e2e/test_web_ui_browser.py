"""The chat page in a real browser against the real server on the demo model.

Headless Chromium (Debian's `chromium` package: $AWQSERVE_CHROMIUM, default /usr/bin/chromium)
driven by Playwright pointed at that binary; browser downloads are never needed. Skips, saying why,
when either is missing. One browser page walks through the flow in order: settings, a streamed
reply, a reply stopped mid-stream, reload, switching, rename, export, import, delete
(test_web_ui_canned.py: what the demo model never writes, and the --api-key prompt).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from conftest import ServerProcess
from _browser import (DRAGON, KEY, LAST_REPLY, TIPS, Page, browser, sync_api)  # noqa: F401

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def page(browser: Any, server: ServerProcess) -> Iterator[Page]:
    p = Page(browser, server.url + "/")
    yield p
    p.close()


def test_page_loads_with_the_model_panel(page: Page, model_name: str) -> None:
    panel = page.tab.locator("#model-panel")
    shown = model_name.rstrip("/").rsplit("/", 1)[-1] if model_name.startswith("/") else model_name
    sync_api.expect(panel.locator(".model-id")).to_have_text(shown)
    sync_api.expect(panel.locator(".model-id")).to_have_attribute("title", model_name)
    sync_api.expect(panel.locator(".status-text")).to_have_text("ready")
    sync_api.expect(panel).to_contain_text("512 tokens")  # --max-model-len of the e2e servers
    sync_api.expect(panel).to_contain_text("AWQ · 4-bit")
    sync_api.expect(panel).to_contain_text("KV cache")


def test_settings_are_saved(page: Page) -> None:
    page.settings(temperature=0, max_tokens=48, system="")
    sync_api.expect(page.tab.locator("#settings-summary")).to_have_text("greedy · max 48 tokens")
    page.open()  # kept across a reload
    sync_api.expect(page.tab.locator("#settings-summary")).to_have_text("greedy · max 48 tokens")


def test_reply_streams_in(page: Page) -> None:
    page.send(TIPS)
    lengths = []
    while page.tab.locator("#stop").is_visible():
        lengths.append(page.reply_length())
        time.sleep(0.02)
    growing = sorted({n for n in lengths if n > 0})
    assert len(growing) >= 3, f"the reply did not grow while streaming: {lengths}"
    page.wait_idle()
    reply = page.tab.locator(LAST_REPLY)
    assert reply.locator(".content li").count() >= 1 and reply.locator(".content strong").count() >= 1  # markdown
    figures = reply.locator(".figures").inner_text()
    assert "TTFT" in figures and "tok/s" in figures and "48 tokens" in figures, figures
    sync_api.expect(reply.locator(".note")).to_have_text("cut at max_tokens")
    assert page.conversations() == [TIPS]


def test_stop_mid_stream(page: Page, http: httpx.Client) -> None:
    page.tab.click("#new-chat")
    page.settings(max_tokens=400)
    page.send(DRAGON)
    page.wait_until(lambda: page.reply_length() > 40)  # (wait_for_function would need 'unsafe-eval')
    page.tab.click("#stop")
    page.wait_idle()
    stopped = page.reply_length()
    reply = page.tab.locator(LAST_REPLY)
    sync_api.expect(reply.locator(".note")).to_have_text("stopped")
    assert stopped > 40
    time.sleep(1.0)
    assert page.reply_length() == stopped, "the reply kept growing after stop"
    deadline = time.monotonic() + 10  # the server aborted the request: nothing left running
    while http.get("/health").json()["num_running"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert http.get("/health").json()["num_running"] == 0
    page.settings(max_tokens=48)


def test_reload_keeps_the_conversations(page: Page) -> None:
    before = page.tab.locator(LAST_REPLY).locator(".content").inner_text()
    page.open()
    assert page.conversations() == [DRAGON, TIPS]
    sync_api.expect(page.tab.locator(LAST_REPLY).locator(".content")).to_have_text(before)
    sync_api.expect(page.tab.locator(LAST_REPLY).locator(".note")).to_have_text("stopped")


def test_switch_and_rename_conversations(page: Page) -> None:
    page.tab.locator(".conv-open", has_text="clean code").click()
    sync_api.expect(page.tab.locator("#chat-title")).to_have_text(TIPS)
    sync_api.expect(page.tab.locator(".msg.user .bubble")).to_have_text(TIPS)
    page.tab.locator(".conv-item.current button[aria-label=Rename]").click()
    page.tab.fill(".conv-rename", "Tips")
    page.tab.press(".conv-rename", "Enter")
    sync_api.expect(page.tab.locator("#chat-title")).to_have_text("Tips")
    page.tab.locator(".conv-open", has_text="dragon").click()
    sync_api.expect(page.tab.locator(".msg.user .bubble")).to_contain_text("dragon")


def test_export_and_import(page: Page, tmp_path: Path) -> None:
    with page.tab.expect_download() as download:
        page.tab.click("#export")
    saved = tmp_path / download.value.suggested_filename
    download.value.save_as(saved)
    doc = json.loads(saved.read_text())
    assert doc["format"] == "awqserve-conversations" and saved.suffix == ".json"
    titles = sorted(c["title"] for c in doc["conversations"])
    assert titles == [DRAGON, "Tips"]
    tips = next(c for c in doc["conversations"] if c["title"] == "Tips")
    assert [m["role"] for m in tips["messages"]] == ["user", "assistant"]
    assert tips["messages"][0]["content"] == TIPS and "code" in tips["messages"][1]["content"].lower()
    page.tab.set_input_files("#import-file", str(saved))
    sync_api.expect(page.tab.locator("#toast")).to_have_text("Imported 2 conversations.")
    assert len(page.conversations()) == 4  # same ids as the ones here: imported as copies
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"conversations": [{"messages": [{"role": "wizard", "content": "x"}]}]}))
    page.tab.set_input_files("#import-file", str(bad))
    sync_api.expect(page.tab.locator("#toast")).to_contain_text("conversations[0].messages[0].role")
    assert len(page.conversations()) == 4


def test_delete_asks_twice(page: Page) -> None:
    delete = page.tab.locator(".conv-item.current button.danger")
    delete.click()
    assert len(page.conversations()) == 4
    page.tab.locator(".conv-item.current button[aria-label='Confirm delete']").click()
    sync_api.expect(page.tab.locator(".conv-title")).to_have_count(3)


def test_no_console_errors(page: Page) -> None:
    assert page.errors == []
