"""Hermes-format tool calls, as Qwen3 and Qwen3-Next write them:

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>

Any number of calls, with or without content before, between or after them (auto tool choice).

Format decisions (each is chunking-independent, so streamed and one-shot parsing agree):
- Content is passed through verbatim, except whitespace next to call markup: the whitespace run
  right before `<tool_call>` and right after a call (after `</tool_call>`, or after the call's
  closing `}` when the close tag is missing) is dropped. So "Let me check.\\n\\n<tool_call>..."
  gives the content "Let me check." and a response of only calls has no content at all.
- A call starts at `<tool_call>` anywhere in content (not inside another call's JSON: a
  `</tool_call>` or `<tool_call>` inside a JSON string is just string text). Text such as `<tool`
  or `<tools>` that is not the tag is content.
- A call is complete when its JSON object closes; `</tool_call>` is then expected and consumed.
  If something else follows instead (the close tag is missing), it is parsed as content again; a
  truncated close tag at the end of the stream is dropped.
- A malformed call (see `_hermes_call` for what is accepted) or one the stream cut off is passed
  through as content: the whitespace before it, `<tool_call>` and everything up to and including
  the next `</tool_call>` (or up to the next `<tool_call>`, or the end). `ToolCallInvalid` precedes
  that content if the call had already been started.
"""
from __future__ import annotations

from dataclasses import dataclass

from awqserve.parsers._hermes_call import CallScanner, CallStatus
from awqserve.parsers._text import WHITESPACE, HeldTextParser, find_first, split_held
from awqserve.parsers.accumulate import accumulate
from awqserve.parsers.events import (ContentDelta, IdFactory, ParserEvent, ToolCallInvalid,
                                     random_call_id)

_CONTENT, _CALL, _AFTER_CALL, _MALFORMED = "content", "call", "after_call", "malformed"


class HermesToolParser(HeldTextParser):
    """Streaming parser for hermes tool calls; one instance per generated sequence.

    `feed(delta)` returns the events the text so far makes certain; `finish()` flushes the rest
    (see `events.py` for the invariants of the stream). Held back: in content, a possible tag
    prefix and the whitespace before it; in a call, the name until its closing quote, and the
    arguments only while the name is still unknown.
    """

    TRIGGER = "<tool_call>"
    CLOSE = "</tool_call>"

    def __init__(self, id_factory: IdFactory | None = None) -> None:
        super().__init__()  # _buf: text not yet emitted (content states) or not yet scanned
        self._new_id = id_factory or random_call_id
        self._state = _CONTENT
        self._lstrip = False     # drop leading whitespace (we are right after a call)
        self._gap = ""           # whitespace dropped before the current call's `<tool_call>`
        self._call: CallScanner | None = None
        self._next_index = 0

    def finish(self) -> list[ParserEvent]:
        """End of output: release held text, close or fall back on an unfinished call."""
        self._final = True
        out = self.feed("")
        if self._state == _CALL:
            self._fail_call(out)  # the stream ended inside a call
            while self._step(out):
                pass
        self._done = True
        return out

    def _held_chars(self) -> str:
        """A whitespace-only buffer is held whole in content (it may precede a call)."""
        return WHITESPACE if self._state in (_CONTENT, _MALFORMED) and not self._lstrip else ""

    # -- states: each returns True when it changed state and the loop should continue ----------
    def _step(self, out: list[ParserEvent]) -> bool:
        if self._state == _CALL:
            return self._in_call(out)
        if self._state == _AFTER_CALL:
            return self._after_call()
        if self._lstrip:
            self._buf = self._buf.lstrip(WHITESPACE)
            if not self._buf:
                return False
            self._lstrip = False
        tags = (self.TRIGGER,) if self._state == _CONTENT else (self.TRIGGER, self.CLOSE)
        hit = find_first(self._buf, tags)
        if hit is None:
            emit, self._buf = (self._buf, "") if self._final else split_held(
                self._buf, tags, WHITESPACE)
            _content(out, emit)
            return False
        i, tag = hit
        if tag == self.CLOSE:  # the end of a malformed call's text
            _content(out, self._buf[:i + len(tag)])
            self._buf, self._state = self._buf[i + len(tag):], _CONTENT
            return True
        self._start_call(out, i)
        return True

    def _start_call(self, out: list[ParserEvent], i: int) -> None:
        before = self._buf[:i]
        text = before.rstrip(WHITESPACE)
        _content(out, text)
        self._gap = before[len(text):]
        self._buf = self._buf[i + len(self.TRIGGER):]
        self._call = CallScanner(self._next_index, self._new_id)
        self._state = _CALL

    def _in_call(self, out: list[ParserEvent]) -> bool:
        assert self._call is not None
        events, used = self._call.feed(self._buf)
        out.extend(events)
        self._buf = self._buf[used:]
        if self._call.status is CallStatus.ONGOING:
            return False
        if self._call.status is CallStatus.MALFORMED:
            self._fail_call(out)
            return True
        self._next_index += 1
        self._call, self._state = None, _AFTER_CALL
        return True

    def _fail_call(self, out: list[ParserEvent]) -> None:
        """Turn the current call back into content (its raw text stays in order)."""
        assert self._call is not None
        if self._call.started:
            out.append(ToolCallInvalid(self._call.index))
            self._next_index += 1  # a started index is never reused
        _content(out, self._gap + self.TRIGGER + "".join(self._call.raw))
        self._call, self._state = None, _MALFORMED

    def _after_call(self) -> bool:
        # Whitespace after a call is dropped whatever follows it, so it need not be held.
        rest = self._buf = self._buf.lstrip(WHITESPACE)
        if rest.startswith(self.CLOSE):
            self._buf = rest[len(self.CLOSE):]
        elif self.CLOSE.startswith(rest) and not self._final:
            return False  # maybe the close tag is still coming
        else:
            self._buf = "" if self.CLOSE.startswith(rest) else rest  # missing or truncated tag
        self._state, self._lstrip = _CONTENT, True
        return True


def _content(out: list[ParserEvent], text: str) -> None:
    if text:
        out.append(ContentDelta(text))


@dataclass(frozen=True)
class ParsedToolCall:
    """One complete call of a finished output; `arguments_json` is the arguments JSON text."""

    name: str
    arguments_json: str


def parse_complete(text: str) -> tuple[str, list[ParsedToolCall]]:
    """Parse a whole output at once: (content, complete calls), exactly what streaming gives."""
    parser = HermesToolParser()
    message = accumulate(parser.feed(text) + parser.finish())
    calls = [ParsedToolCall(c["function"]["name"], c["function"]["arguments"])
             for c in message.tool_calls]
    return message.content or "", calls
