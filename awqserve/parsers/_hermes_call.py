"""The body of one hermes tool call: a JSON object `{"name": ..., "arguments": {...}}`.

`CallScanner` is fed the text after `<tool_call>` and walks the object's structure (keys, colons,
commas) itself, delegating each value to a `ValueScanner`. It emits `ToolCallStart` as soon as the
name string is complete and streams the raw text of an `arguments` object as it arrives, buffering
it while the name is still unknown (arguments written first). Every value is validated with one
`json.loads` when it completes, so a call only ends (`ToolCallEnd`) if its whole body is valid JSON.

Accepted variations: keys in either order; `parameters` as an alias of `arguments`; arguments as a
JSON string holding an object (emitted decoded, in one fragment; an empty string means `{}`);
arguments missing or `null` (`{}`); unknown extra keys (validated, ignored). Anything else —
a non-object body, no or empty name, arguments that are not an object, duplicate keys,
invalid JSON — makes the call malformed.
"""
from __future__ import annotations

import json
from enum import Enum

from awqserve.parsers._json_scan import SCALAR_START, ValueScanner
from awqserve.parsers._text import WHITESPACE
from awqserve.parsers.events import (IdFactory, ParserEvent, ToolCallArgumentsDelta, ToolCallEnd,
                                     ToolCallStart)

_ARGUMENT_KEYS = ("arguments", "parameters")


class CallStatus(Enum):
    ONGOING = "ongoing"
    COMPLETE = "complete"    # the object closed; `ToolCallEnd` was emitted
    MALFORMED = "malformed"  # the offending character was not consumed


class _S(Enum):
    OPEN = 0          # before `{`
    KEY_OR_END = 1    # after `{`
    KEY = 2           # after `,`
    IN_KEY = 3
    COLON = 4
    VALUE_START = 5
    IN_VALUE = 6
    AFTER_VALUE = 7


class CallScanner:
    """Incremental scanner for one call body; `raw` keeps the consumed text for the fallback."""

    def __init__(self, index: int, new_id: IdFactory) -> None:
        self.index = index
        self.started = False
        self.status = CallStatus.ONGOING
        self.raw: list[str] = []
        self._new_id = new_id
        self._state = _S.OPEN
        self._value: ValueScanner | None = None
        self._value_raw: list[str] = []
        self._key = ""
        self._name: str | None = None
        self._args_seen = False
        self._args_pending: list[str] = []  # arguments text not yet emitted (name unknown)
        self._frags: list[str] = []          # arguments text to emit at the end of this feed
        self._out: list[ParserEvent] = []

    def feed(self, text: str) -> tuple[list[ParserEvent], int]:
        """Scan `text` until it runs out or the call completes or fails; returns the events and the
        number of characters consumed (the rest belongs to whatever follows the call)."""
        pos = 0
        while pos < len(text) and self.status is CallStatus.ONGOING:
            pos = self._step(text, pos)
        self.raw.append(text[:pos])
        self._flush_fragments()
        out, self._out = self._out, []
        return out, pos

    # -- structure ------------------------------------------------------------------------------
    def _step(self, text: str, pos: int) -> int:
        if self._state is _S.IN_VALUE or self._state is _S.IN_KEY:
            return self._scan_value(text, pos)
        c = text[pos]
        if c in WHITESPACE:
            return pos + 1
        if self._state is _S.VALUE_START:
            return self._begin_value(c, pos)
        expected = {_S.OPEN: "{", _S.KEY_OR_END: '"}', _S.KEY: '"', _S.COLON: ":",
                    _S.AFTER_VALUE: ",}"}[self._state]
        if c not in expected:
            self.status = CallStatus.MALFORMED
            return pos
        if c == '"':
            self._value, self._value_raw, self._state = ValueScanner(c), [], _S.IN_KEY
            return pos
        if c == "}":
            self._close()
        else:
            self._state = {"{": _S.KEY_OR_END, ":": _S.VALUE_START, ",": _S.KEY}[c]
        return pos + 1

    def _begin_value(self, c: str, pos: int) -> int:
        duplicate = (self._key == "name" and self._name is not None) or (
            self._key in _ARGUMENT_KEYS and self._args_seen)
        if duplicate or (c not in '"{[' and c not in SCALAR_START):
            self.status = CallStatus.MALFORMED
            return pos
        self._args_seen = self._args_seen or self._key in _ARGUMENT_KEYS
        self._value, self._value_raw, self._state = ValueScanner(c), [], _S.IN_VALUE
        return pos

    def _scan_value(self, text: str, pos: int) -> int:
        assert self._value is not None
        end, done = self._value.scan(text, pos)
        piece = text[pos:end]
        self._value_raw.append(piece)
        if self._streams_arguments():
            (self._frags if self.started else self._args_pending).append(piece)
        if done:
            self._value_done()
        return end

    def _streams_arguments(self) -> bool:
        """Arguments given as an object are passed on as the model writes them (an array is not
        streamed: it is malformed once complete, and a client should not see it)."""
        assert self._value is not None
        return (self._state is _S.IN_VALUE and self._key in _ARGUMENT_KEYS
                and self._value.first == "{")

    # -- values ---------------------------------------------------------------------------------
    def _value_done(self) -> None:
        try:
            value = strict_loads("".join(self._value_raw))
        except ValueError:
            self.status = CallStatus.MALFORMED
            return
        if self._state is _S.IN_KEY:
            self._key = str(value)  # a complete JSON string token
            self._state = _S.COLON
            return
        self._state = _S.AFTER_VALUE
        if self._key == "name":
            self._on_name(value)
        elif self._key in _ARGUMENT_KEYS:
            self._on_arguments(value)

    def _on_name(self, name: object) -> None:
        if not isinstance(name, str) or not name:
            self.status = CallStatus.MALFORMED
            return
        self._name = name
        self._out.append(ToolCallStart(self.index, self._new_id(), name))
        self.started = True
        self._frags.extend(self._args_pending)  # arguments that were written before the name
        self._args_pending = []

    def _on_arguments(self, value: object) -> None:
        if isinstance(value, dict):
            return  # already streamed (or pending) as raw text
        text = _decode_string_arguments(value)
        if text is None:
            self.status = CallStatus.MALFORMED
            return
        (self._frags if self.started else self._args_pending).append(text)

    def _close(self) -> None:
        if self._name is None:
            self.status = CallStatus.MALFORMED
            return
        if not self._args_seen:
            self._frags.append("{}")
        self._flush_fragments()
        self._out.append(ToolCallEnd(self.index))
        self.status = CallStatus.COMPLETE

    def _flush_fragments(self) -> None:
        if self.status is CallStatus.MALFORMED:
            return  # the call is discarded; its text goes out as content instead
        fragment = "".join(self._frags)
        self._frags = []
        if fragment:
            self._out.append(ToolCallArgumentsDelta(self.index, fragment))


def strict_loads(text: str) -> object:
    """`json.loads` without Python's extensions (NaN, Infinity): clients must be able to parse
    what we pass on. Raw control characters in strings are rejected too (json's default)."""
    return json.loads(text, parse_constant=_reject_constant)


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _decode_string_arguments(value: object) -> str | None:
    """Arguments that are not an object: `null` and `""` mean `{}`; a string must hold a JSON
    object (returned as the decoded text); anything else is malformed (None)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return "{}"
    if not isinstance(value, str):
        return None
    try:
        inner = strict_loads(value)
    except ValueError:
        return None
    return value if isinstance(inner, dict) else None
