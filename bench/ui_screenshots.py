"""Screenshots of the chat page for docs/ui/: real replies of a real server (the demo model by default).

    .venv/bin/python bench/ui_screenshots.py                 # starts `awqserve serve` (demo model, eager)
    .venv/bin/python bench/ui_screenshots.py --url http://127.0.0.1:8000/   # an already running server

Needs Playwright (`pip install playwright`) and a system Chromium (Debian: `apt-get install chromium`);
no browser is downloaded. Writes chat.png, chat-dark.png, settings.png and narrow.png (a phone-sized
window). Greedy sampling, so a rerun on the same model gives the same text (the speeds vary).
"""
from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import httpx

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
# Oldest first: the last one is on screen. Prompts the 135M demo model answers well.
PROMPTS = ["Give me three tips for writing clean code, as a bulleted list.",
           "What is the capital of France?",
           "Write a Python function that reverses a string."]
SYSTEM = "You are a concise assistant. Answer in markdown; put code in fenced blocks."


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def demo_server(model: str | None) -> Iterator[str]:
    """`awqserve serve` on a free port until the block ends; yields the page URL."""
    port = free_port()
    argv = [sys.executable, "-m", "awqserve", "serve", *([model] if model else []), "--port", str(port),
            "--enforce-eager", "--max-model-len", "2048", "--disable-log-requests", "--log-level", "warning"]
    proc = subprocess.Popen(argv, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"the server exited with {proc.returncode}")
            try:
                if httpx.get(url + "health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


def chat(page: Any, text: str) -> None:
    page.fill("#prompt", text)
    page.press("#prompt", "Enter")
    page.wait_for_selector("#stop", state="visible")
    page.wait_for_selector("#send", state="visible", timeout=120_000)


def settle(page: Any) -> None:
    """Let the panel poll once more and animations finish; no focus ring, the composer empty."""
    page.mouse.move(0, 0)
    page.evaluate("() => document.activeElement && document.activeElement.blur()")
    time.sleep(1.2)


def take(url: str, out: Path, chromium: str) -> None:
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        light = browser.new_context(viewport={"width": 1280, "height": 800}, color_scheme="light")
        page = light.new_page()
        page.goto(url)
        page.wait_for_selector("body[data-ready=true]")
        page.click("#open-settings")
        page.fill("#settings-form [name=temperature]", "0")
        page.fill("#settings-form [name=max_tokens]", "256")
        page.click("#settings-form button[value=save]")
        for i, text in enumerate(PROMPTS):
            if i:
                page.click("#new-chat")
            chat(page, text)
        settle(page)
        page.screenshot(path=str(out / "chat.png"))
        page.click("#open-settings")
        page.fill("#settings-form [name=system]", SYSTEM)  # shown, not saved: the replies above had none
        page.fill("#settings-form [name=top_p]", "0.95")
        time.sleep(0.3)
        page.screenshot(path=str(out / "settings.png"))
        page.keyboard.press("Escape")
        state = light.storage_state()  # the same conversations in the other windows

        dark = browser.new_context(viewport={"width": 1280, "height": 800}, color_scheme="dark", storage_state=state)
        page = dark.new_page()
        page.goto(url)
        page.wait_for_selector("body[data-ready=true]")
        settle(page)
        page.screenshot(path=str(out / "chat-dark.png"))

        narrow = browser.new_context(viewport={"width": 390, "height": 760}, color_scheme="light", storage_state=state,
                                     device_scale_factor=2, is_mobile=True, has_touch=True)
        page = narrow.new_page()
        page.goto(url)
        page.wait_for_selector("body[data-ready=true]")
        settle(page)
        page.screenshot(path=str(out / "narrow.png"))
        browser.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", help="page of a running server (default: start one on the demo model)")
    ap.add_argument("--model", help="model directory for the server this script starts")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "ui")
    ap.add_argument("--chromium", default=os.environ.get("AWQSERVE_CHROMIUM", "/usr/bin/chromium"))
    args = ap.parse_args()
    if args.url:
        take(args.url, args.out, args.chromium)
    else:
        with demo_server(args.model) as url:
            take(url, args.out, args.chromium)
    print(f"wrote {', '.join(sorted(p.name for p in args.out.glob('*.png')))} to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
