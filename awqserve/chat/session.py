"""The conversation a chat session holds, and the slash commands that change it.

Pure state, no I/O except `/save`: the REPL (chat/repl.py) reads lines, asks `parse_command` whether a
line is a command, and runs it with `execute`. A line that is not a command is a user message;
`//text` sends the literal text `/text`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HELP = """commands:
  /system TEXT       set the system prompt (/system alone clears it); keeps the conversation
  /temperature X     sampling temperature (0 = greedy); /temperature alone: the model's default
  /reset             forget the conversation (system prompt and temperature stay)
  /save FILE         write the conversation as JSON
  /help              this text
  /quit              leave (also Ctrl-D; Ctrl-C at the prompt)
Ctrl-C while a reply streams stops that reply."""


class CommandError(ValueError):
    """A command line that cannot run (unknown name, bad argument); the message says why."""


@dataclass(frozen=True)
class Command:
    name: str  # without the slash
    arg: str = ""


@dataclass
class Conversation:
    """What is sent with the next message: optional system prompt, the turns so far, sampling."""

    system: str | None = None
    temperature: float | None = None  # None: the server's default (the model's generation_config)
    max_tokens: int | None = None
    seed: int | None = None  # with a seed, a sampled reply is reproducible
    turns: list[dict[str, str]] = field(default_factory=list)

    def messages(self) -> list[dict[str, str]]:
        head = [{"role": "system", "content": self.system}] if self.system else []
        return head + list(self.turns)

    def request(self, model: str, user_text: str) -> dict[str, Any]:
        """The chat-completion body for `user_text` after the turns so far (the turn is not added yet)."""
        body: dict[str, Any] = {"model": model,
                                "messages": self.messages() + [{"role": "user", "content": user_text}]}
        if self.temperature is not None:
            body["temperature"] = self.temperature
        if self.max_tokens is not None:
            body["max_tokens"] = self.max_tokens
        if self.seed is not None:
            body["seed"] = self.seed
        return body

    def add_exchange(self, user_text: str, reply: str) -> None:
        self.turns += [{"role": "user", "content": user_text}, {"role": "assistant", "content": reply}]

    def to_json(self, model: str) -> dict[str, Any]:
        return {"model": model, "temperature": self.temperature, "messages": self.messages()}


_NAMES = ("system", "temperature", "reset", "save", "help", "quit", "exit")


def parse_command(line: str) -> Command | None:
    """The command on `line`, or None if it is a message. Raises CommandError for an unknown name."""
    text = line.strip()
    if not text.startswith("/") or text.startswith("//"):
        return None
    name, _, arg = text[1:].partition(" ")
    if name not in _NAMES:
        raise CommandError(f"unknown command /{name}; /help lists the commands")
    return Command("quit" if name == "exit" else name, arg.strip())


def message_text(line: str) -> str:
    """The message a non-command line sends (`//x` → `/x`)."""
    text = line.strip()
    return text[1:] if text.startswith("//") else text


QUIT = "quit"


def execute(cmd: Command, conv: Conversation, model: str) -> str:
    """Run a command on `conv`; returns the line to show the user, or QUIT."""
    if cmd.name == "quit":
        return QUIT
    if cmd.name == "help":
        return HELP
    if cmd.name == "reset":
        conv.turns.clear()
        return "conversation cleared"
    if cmd.name == "system":
        conv.system = cmd.arg or None
        return f"system prompt set ({len(cmd.arg)} characters)" if cmd.arg else "system prompt cleared"
    if cmd.name == "temperature":
        conv.temperature = _temperature(cmd.arg)
        return "temperature: the model's default" if conv.temperature is None else f"temperature {conv.temperature:g}"
    return _save(cmd.arg, conv, model)


def _temperature(arg: str) -> float | None:
    if not arg:
        return None
    try:
        value = float(arg)
    except ValueError:
        raise CommandError(f"/temperature takes a number, not {arg!r}") from None
    if not 0.0 <= value <= 2.0:
        raise CommandError("/temperature must be between 0 and 2 (OpenAI's range)")
    return value


def _save(arg: str, conv: Conversation, model: str) -> str:
    if not arg:
        raise CommandError("/save needs a file name")
    path = Path(arg).expanduser()
    try:
        path.write_text(json.dumps(conv.to_json(model), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    except OSError as e:
        raise CommandError(f"cannot write {path}: {e.strerror or e}") from None
    return f"saved {len(conv.turns)} messages to {path}"
