"""`awqserve chat`: commands, the conversation, the SSE client, and whole sessions against the real app
on the fake engine (greedy requests answer PHRASE; `__script__:TEXT` answers exactly TEXT)."""
from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

from awqserve.chat.client import ChatClient, ChatError, Delta, normalise_url, parse_sse_line
from awqserve.chat.repl import Display, run_session, stream_reply
from awqserve.chat.session import QUIT, Command, CommandError, Conversation, execute, message_text, parse_command
from awqserve.chat.startup import health_line, wait_ready
from awqserve.entrypoints.openai.server_config import ServerConfig
from fake_engine import PHRASE
from server_harness import run_server

ROOT = Path(__file__).resolve().parents[2]


# -- commands and the conversation --------------------------------------------------------------
def test_parse_command() -> None:
    assert parse_command("hello") is None and parse_command("//etc/hosts") is None
    assert message_text("//etc/hosts") == "/etc/hosts"
    assert parse_command(" /system  Be brief. ") == Command("system", "Be brief.")
    assert parse_command("/exit") == Command("quit") and parse_command("/reset") == Command("reset")
    with pytest.raises(CommandError, match="unknown command /frobnicate"):
        parse_command("/frobnicate now")


def test_execute_changes_the_conversation(tmp_path: Path) -> None:
    conv = Conversation()
    conv.add_exchange("hi", "hello")
    assert execute(Command("system", "Be brief."), conv, "m") == "system prompt set (9 characters)"
    assert execute(Command("temperature", "0.5"), conv, "m") == "temperature 0.5" and conv.temperature == 0.5
    with pytest.raises(CommandError):
        execute(Command("temperature", "hot"), conv, "m")
    with pytest.raises(CommandError):
        execute(Command("temperature", "3"), conv, "m")
    out = tmp_path / "conv.json"
    assert execute(Command("save", str(out)), conv, "m").startswith("saved 2 messages")
    saved = json.loads(out.read_text())
    assert saved == {"model": "m", "temperature": 0.5, "messages": [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"}]}
    with pytest.raises(CommandError, match="needs a file"):
        execute(Command("save"), conv, "m")
    execute(Command("reset"), conv, "m")
    assert conv.turns == [] and conv.system == "Be brief." and conv.temperature == 0.5  # reset keeps settings
    assert execute(Command("temperature"), conv, "m").endswith("default") and conv.temperature is None
    assert execute(Command("quit"), conv, "m") == QUIT and "/save FILE" in execute(Command("help"), conv, "m")


def test_request_body_leaves_unset_fields_to_the_server() -> None:
    conv = Conversation(system="S")
    body = conv.request("m", "hi")
    assert body == {"model": "m", "messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "hi"}]}
    conv.temperature, conv.max_tokens, conv.seed = 0.0, 16, 7
    assert conv.request("m", "x") | {"messages": []} == {"model": "m", "messages": [], "temperature": 0.0,
                                                          "max_tokens": 16, "seed": 7}


# -- the client ---------------------------------------------------------------------------------
def test_sse_lines() -> None:
    chunk = {"choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}]}
    assert parse_sse_line("data: " + json.dumps(chunk)) == Delta("Hi")
    think = {"choices": [{"delta": {"reasoning_content": "hmm", "reasoning": "hmm"}, "finish_reason": None}]}
    assert parse_sse_line("data: " + json.dumps(think)) == Delta("", "hmm")
    assert parse_sse_line('data: {"choices": [], "usage": {"total_tokens": 3}}') is None
    assert parse_sse_line("") is None and parse_sse_line(": keep-alive") is None
    assert parse_sse_line("data: [DONE]") not in (None,) and not isinstance(parse_sse_line("data: [DONE]"), Delta)
    with pytest.raises(ChatError, match="shutting down"):
        parse_sse_line('data: {"error": {"message": "The server is shutting down", "status": 503}}')


def test_normalise_url() -> None:
    assert normalise_url("localhost:8000/v1/") == "http://localhost:8000"
    assert normalise_url("https://h.example/api/v1") == "https://h.example/api"
    with pytest.raises(ValueError):
        ChatClient("ftp://x")


def test_stopped_reply_keeps_what_was_shown() -> None:
    class Interrupted:
        base_url = "http://x"

        def stream_chat(self, body: dict[str, Any]) -> Iterator[Delta]:
            yield Delta("Par")
            yield Delta("is")
            raise KeyboardInterrupt

    out, err = io.StringIO(), io.StringIO()
    text, stopped = stream_reply(Interrupted(), {}, Display(out, err, decorated=False))  # type: ignore[arg-type]
    assert (text, stopped) == ("Paris", True) and out.getvalue() == "Paris\n" and "[stopped]" in err.getvalue()


# -- whole sessions against the app -------------------------------------------------------------
def _session(url: str, lines: list[str], conv: Conversation | None = None, decorated: bool = False,
             key: str | None = None) -> tuple[int, str, str]:
    client = ChatClient(url, key)
    out, err = io.StringIO(), io.StringIO()
    feed = iter(lines)
    code = run_session(client, client.first_model() if key is None else "m", conv or Conversation(max_tokens=16),
                       Display(out, err, decorated), lambda: next(feed, None))
    return code, out.getvalue(), err.getvalue()


def test_plain_session_streams_replies_and_runs_commands(tmp_path: Path) -> None:
    with run_server() as s:
        code, out, err = _session(s.url, ["/temperature 0", "hello", "/reset", "__script__:second answer",
                                          f"/save {tmp_path / 'c.json'}", "/quit", "never sent"])
    assert code == 0
    assert out.splitlines() == [PHRASE[:16], "second answer"]  # replies only, one line each
    assert "temperature 0" in err and "conversation cleared" in err and "[cut at max_tokens]" in err
    messages = json.loads((tmp_path / "c.json").read_text())["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant"]  # /reset dropped the first exchange


def test_history_goes_with_each_request() -> None:
    with run_server() as s:
        conv = Conversation(system="be kind", temperature=0.0, max_tokens=16)
        _session(s.url, ["__script__:one", "__script__:two"], conv)
    assert conv.messages() == [{"role": "system", "content": "be kind"},
                               {"role": "user", "content": "__script__:one"}, {"role": "assistant", "content": "one"},
                               {"role": "user", "content": "__script__:two"}, {"role": "assistant", "content": "two"}]


def test_reasoning_is_dimmed_on_a_terminal_and_left_out_of_plain_output() -> None:
    with run_server(ServerConfig(reasoning_parser="qwen3")) as s:
        msg = ["__script__:<think>mull it over</think>Forty-two."]
        _, plain, _ = _session(s.url, msg, Conversation(max_tokens=80))
        _, fancy, _ = _session(s.url, msg, Conversation(max_tokens=80), decorated=True)
    assert plain == "Forty-two.\n"
    assert "\x1b[2mmull it over" in fancy and "Forty-two." in fancy


def test_server_errors_are_reported_and_set_the_exit_status() -> None:
    with run_server(ServerConfig(api_keys=("secret",))) as s:
        code, out, err = _session(s.url, ["hello"], key="wrong")
    assert code == 1 and out == "" and "error:" in err and "HTTP 401" in err


def test_wait_ready_shows_the_loading_phase() -> None:
    with run_server(wait_ready=False, load_delay=1.0) as s:
        shown = io.StringIO()
        wait_ready(ChatClient(s.url), shown, poll_s=0.05)
    assert "server loading: loading weights" in shown.getvalue()
    assert health_line({"phase": "compiling", "progress": 0.5, "total": 2, "eta_s": 12}) == \
        "server loading: compiling decode step 50%, about 12s left"
    with pytest.raises(ChatError, match="cannot reach"):
        wait_ready(ChatClient("http://127.0.0.1:9"), None, poll_s=0.1, connect_grace_s=0.3)


def test_cli_pipes_stdin_to_stdout() -> None:
    """`echo … | awqserve chat --url …`: the real entry point, plain because stdout is a pipe."""
    with run_server() as s:
        done = subprocess.run([sys.executable, "-m", "awqserve", "chat", "--url", s.url, "--temperature", "0",
                               "--max-tokens", "9"], input="hi\n__script__:bye\n", capture_output=True, text=True,
                              cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{PHRASE[:9]}\nbye\n" and "\x1b[" not in done.stdout + done.stderr


def test_cli_refuses_model_and_url_together() -> None:
    done = subprocess.run([sys.executable, "-m", "awqserve", "chat", "/tmp", "--url", "http://x"],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 2 and "not both" in done.stderr
