"""`awqserve chat` in a real terminal (a pty, driven by pexpect) against the app on the fake engine:
a streamed answer, /reset, and Ctrl-C in the middle of a reply (the reply stops, the request is
aborted on the server, the prompt comes back and the session goes on)."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from awqserve.config.engine_config import EngineConfig
from fake_engine import PHRASE
from server_harness import RunningServer, run_server

pexpect = pytest.importorskip("pexpect")
ROOT = Path(__file__).resolve().parents[2]
PROMPT = ">>> "


def _spawn(url: str) -> "pexpect.spawn":
    return pexpect.spawn(sys.executable, ["-m", "awqserve", "chat", "--url", url, "--temperature", "0",
                                          "--max-tokens", "3000"],
                         cwd=str(ROOT), encoding="utf-8", timeout=30, dimensions=(40, 200))


def _wait_idle(s: RunningServer, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while s.state.tracker.api_requests and time.monotonic() < deadline:
        time.sleep(0.02)


def test_stream_reset_and_ctrl_c_mid_reply() -> None:
    # 20 ms per token and up to 3000 tokens: a reply that is still streaming when Ctrl-C comes
    config = EngineConfig(max_model_len=4096, max_num_seqs=4)
    with run_server(engine_config=config, step_delay=0.02) as s:
        child = _spawn(s.url)
        try:
            child.expect_exact(PROMPT)
            assert "chatting with" in child.before

            # a streamed answer, arriving piece by piece while the request is in flight
            child.sendline("__script__:Paris is the capital of France.")
            child.expect_exact("Paris is")
            child.expect_exact("France.")
            child.expect_exact(PROMPT)

            child.sendline("/reset")
            child.expect_exact("conversation cleared")
            child.expect_exact(PROMPT)

            # Ctrl-C mid-reply
            child.sendline("tell me a long story")
            child.expect_exact(PHRASE.strip())
            assert s.state.tracker.api_requests == 1
            child.sendintr()
            child.expect_exact("[stopped]")
            child.expect_exact(PROMPT)
            _wait_idle(s)
            assert s.state.tracker.api_requests == 0 and child.isalive()
            assert len(s.engine.aborts) == 1  # the server aborted the stopped request

            # the session goes on; Ctrl-D ends it cleanly
            child.sendline("__script__:still here")
            child.expect_exact("still here")
            child.expect_exact(PROMPT)
            child.sendeof()
            child.expect(pexpect.EOF)
        finally:
            child.close(force=True)
        assert child.exitstatus == 0


def test_ctrl_c_at_the_prompt_quits() -> None:
    with run_server() as s:
        child = _spawn(s.url)
        try:
            child.expect_exact(PROMPT)
            child.sendintr()
            child.expect(pexpect.EOF)
        finally:
            child.close(force=True)
        assert child.exitstatus == 0
