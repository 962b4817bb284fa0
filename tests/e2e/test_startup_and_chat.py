"""The real server's start as a user sees it, and the demo model as a newcomer meets it:
/health names the loading phases in order (the eager session server; the compiled start is checked
in test_server_compiled.py), the demo model's sampling defaults (temperature 0.2, top-p 0.9 from its
generation_config.json) apply to requests that set none while request values win, and
`awqserve chat` answers the France question at those defaults."""
from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest

from _startup import assert_phases_in_order
from conftest import ROOT, ServerProcess

MSG = [{"role": "user", "content": "What is the capital of France?"}]
demo_only = pytest.mark.skipif(bool(os.environ.get("AWQSERVE_E2E_MODEL")), reason="checks the demo model")


def test_health_shows_loading_phases_in_order(server: ServerProcess) -> None:
    seen = assert_phases_in_order(server.startup_health, must_see=("loading_weights",))
    assert "compiling" not in seen  # the session server runs --enforce-eager


def _answer(client: Any, model: str, **kw: Any) -> str:
    r = client.chat.completions.create(model=model, messages=MSG, max_tokens=24, seed=3, **kw)
    return str(r.choices[0].message.content)


@demo_only
def test_demo_sampling_defaults_apply_and_requests_override(client: Any, model_name: str) -> None:
    default = _answer(client, model_name)
    assert default == _answer(client, model_name, temperature=0.2, top_p=0.9)  # the same SamplingParams
    assert default != _answer(client, model_name, temperature=1.8, top_p=1.0)  # a request's own value wins
    assert "Paris" in default


@demo_only
def test_chat_cli_answers_at_default_sampling(server: ServerProcess) -> None:
    done = subprocess.run([sys.executable, "-m", "awqserve", "chat", "--url", server.url, "--seed", "0",
                           "--max-tokens", "48"], input="What is the capital of France?\n", capture_output=True,
                          text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "Paris" in done.stdout and done.stdout.count("\n") == 1, done.stdout


@demo_only
def test_prepare_only_builds_and_exits_without_serving(server: ServerProcess) -> None:
    # After the session server, the demo model is cached: this loads it, warms nothing (eager) and exits.
    done = subprocess.run([sys.executable, "-m", "awqserve", "serve", "--prepare-only", "--enforce-eager",
                           "--port", "1"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "prepared in" in done.stderr and "Uvicorn running" not in done.stderr
