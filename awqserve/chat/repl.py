"""The read–reply loop of `awqserve chat` and how it writes to the terminal.

Decorated mode (stdout is a terminal): a prompt with line editing and history (readline), replies
streamed as they arrive, reasoning dimmed, notes dimmed. Plain mode (stdout is a pipe or file): no
prompt, no colours; stdout carries only the replies, one per input message, so
`echo "hi" | awqserve chat --url …` is scriptable, and notes and errors go to stderr.

Ctrl-C while a reply streams closes the stream (the server aborts the request), keeps what was shown
as the assistant's turn, and returns to the prompt; Ctrl-C or Ctrl-D at the prompt ends the session.
"""
from __future__ import annotations

import contextlib
import sys
from typing import Callable, TextIO

from awqserve.chat.client import ChatClient, ChatError
from awqserve.chat.session import QUIT, CommandError, Conversation, execute, message_text, parse_command

DIM, BOLD_GREEN, RED, RESET = "\x1b[2m", "\x1b[1;32m", "\x1b[31m", "\x1b[0m"
PROMPT = f"\001{BOLD_GREEN}\002>>> \001{RESET}\002"  # \001..\002: readline must not count the escapes


class Display:
    """Every write the session makes; `decorated` chooses terminal or plain output."""

    def __init__(self, out: TextIO, err: TextIO, decorated: bool) -> None:
        self.out, self.err, self.decorated = out, err, decorated
        self._reasoning = False  # inside a dimmed reasoning run
        self._mid_line = False  # reply text written since the last newline

    def note(self, text: str) -> None:
        if self.decorated:
            self._write(self.out, f"{DIM}{text}{RESET}\n")
        else:
            self._write(self.err, text + "\n")

    def error(self, text: str) -> None:
        if self._mid_line:  # a stream that failed half-way: end its line first
            self.end_reply()
        self._write(self.err, f"{RED}error: {text}{RESET}\n" if self.decorated else f"error: {text}\n")

    def reasoning(self, text: str) -> None:
        if self.decorated:  # plain output carries answers only
            self._write(self.out, text if self._reasoning else DIM + text)
            self._reasoning = self._mid_line = True

    def content(self, text: str) -> None:
        if self._reasoning:
            self._reasoning = False
            self._write(self.out, RESET + "\n")
        self._mid_line = True
        self._write(self.out, text)

    def end_reply(self, stopped: bool = False) -> None:
        """End the reply's line (always: plain output has one line per reply, even an empty one)."""
        self._write(self.out, (RESET if self._reasoning else "") + "\n")
        self._reasoning = self._mid_line = False
        if stopped:
            self.note("[stopped]")

    @staticmethod
    def _write(stream: TextIO, text: str) -> None:
        stream.write(text)
        stream.flush()


def line_reader(display: Display, stdin: TextIO) -> Callable[[], str | None]:
    """Next input line (None at end of input). Decorated: `input()` with the prompt and readline."""
    if not display.decorated:
        return lambda: (stdin.readline() or None)
    with contextlib.suppress(ImportError):  # absent on some platforms; input() still works
        import readline  # noqa: F401 - importing it gives input() editing and history

    def read() -> str | None:
        try:
            return input(PROMPT)
        except EOFError:
            display.end_reply()
            return None

    return read


def stream_reply(client: ChatClient, body: dict[str, object], display: Display) -> tuple[str, bool]:
    """Stream one reply to the display; (text shown, whether Ctrl-C stopped it)."""
    parts: list[str] = []
    stream = client.stream_chat(body)
    try:
        with contextlib.closing(stream):
            for delta in stream:
                if delta.reasoning:
                    display.reasoning(delta.reasoning)
                if delta.content:
                    parts.append(delta.content)
                    display.content(delta.content)
                if delta.finish_reason == "length":
                    display.end_reply()
                    display.note("[cut at max_tokens]")
                    return "".join(parts), False
    except KeyboardInterrupt:
        display.end_reply(stopped=True)
        return "".join(parts), True
    display.end_reply()
    return "".join(parts), False


def run_session(client: ChatClient, model: str, conv: Conversation, display: Display,
                read_line: Callable[[], str | None]) -> int:
    """The loop; returns the exit status (1 if any request failed, so scripts notice)."""
    failed = False
    while True:
        try:
            line = read_line()
        except KeyboardInterrupt:
            display.end_reply()
            return int(failed)
        if line is None:
            return int(failed)
        if not line.strip():
            continue
        try:
            outcome = _command(line, conv, model)
        except CommandError as e:
            display.error(str(e))
            continue
        if outcome == QUIT:
            return int(failed)
        if outcome is not None:
            display.note(outcome)
            continue
        failed = not _exchange(client, model, conv, display, message_text(line)) or failed


def _command(line: str, conv: Conversation, model: str) -> str | None:
    cmd = parse_command(line)
    return execute(cmd, conv, model) if cmd is not None else None


def _exchange(client: ChatClient, model: str, conv: Conversation, display: Display, text: str) -> bool:
    """Send one message and stream its reply into the conversation; False if the request failed."""
    try:
        reply, _stopped = stream_reply(client, conv.request(model, text), display)
    except ChatError as e:
        display.error(str(e))
        return False
    except OSError as e:
        display.error(f"cannot reach {client.base_url}: {e}")
        return False
    conv.add_exchange(text, reply)  # a stopped reply keeps what was shown, as chat UIs do
    return True


def stdout_is_terminal(out: TextIO = sys.stdout) -> bool:
    return bool(getattr(out, "isatty", lambda: False)())
