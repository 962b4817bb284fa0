"""Browser harness of the page tests: Debian's Chromium ($AWQSERVE_CHROMIUM, default /usr/bin/chromium)
driven by Playwright pointed at that binary (browser downloads are never needed); skips, saying why,
when either is missing."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest


CHROMIUM = Path(os.environ.get("AWQSERVE_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
KEY = "sk-web-ui-test"
TIPS = "List three tips for writing clean code."  # the demo model answers with a markdown list
DRAGON = "Tell me a long story about a dragon."
LAST_REPLY = ".msg.assistant >> nth=-1"
REPLY_LENGTH = ("() => { const r = [...document.querySelectorAll('.msg.assistant .content')].pop();"
                " return r ? r.textContent.length : -1; }")

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
if not CHROMIUM.is_file():
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set AWQSERVE_CHROMIUM)",
                allow_module_level=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


class Page:
    """A browser tab on the chat page, with the console errors it logged (CSP violations among them)."""

    def __init__(self, browser: Any, url: str) -> None:
        self.context = browser.new_context(viewport={"width": 1280, "height": 800}, accept_downloads=True)
        self.context.set_default_timeout(20_000)
        self.tab = self.context.new_page()
        self.errors: list[str] = []
        self.tab.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.tab.on("pageerror", lambda e: self.errors.append(str(e)))
        self.url = url
        self.open()

    def open(self) -> None:
        self.tab.goto(self.url)
        self.tab.wait_for_selector("body[data-ready=true]")

    def settings(self, **fields: object) -> None:
        self.tab.click("#open-settings")
        for name, value in fields.items():
            self.tab.fill(f"#settings-form [name={name}]", str(value))
        self.tab.click("#settings-form button[value=save]")
        self.tab.wait_for_selector("#settings-dialog", state="hidden")

    def send(self, text: str, see_stop: bool = True) -> None:
        """Type and press Enter; `see_stop`: wait for the stop button (a canned reply may be over before)."""
        self.tab.fill("#prompt", text)
        self.tab.press("#prompt", "Enter")  # Enter sends
        if see_stop:
            self.tab.wait_for_selector("#stop", state="visible")

    def wait_idle(self) -> None:
        """Until the last reply is finished (its footer is drawn only then) and the send button is back."""
        self.tab.wait_for_selector("#send", state="visible", timeout=60_000)
        self.tab.locator(LAST_REPLY).locator(".msg-foot").wait_for()

    def wait_until(self, condition: Callable[[], bool], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, "timed out"
            time.sleep(0.02)

    def reply_length(self) -> int:
        return int(self.tab.evaluate(REPLY_LENGTH))

    def conversations(self) -> list[str]:
        return [t.strip() for t in self.tab.locator(".conv-title").all_inner_texts()]

    def close(self) -> None:
        self.context.close()
