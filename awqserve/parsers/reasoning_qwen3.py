"""Qwen3 reasoning: `<think>…</think>` at the start of the output is reasoning, the rest content.

Qwen3 writes `<think>\\nreasoning\\n</think>\\n\\nanswer`. Some chat templates (thinking-only
models such as Qwen3-*-Thinking-2507) already put `<think>` in the prompt, so the output starts
inside the reasoning and only `</think>` appears: pass `starts_in_reasoning=True` for those (the
`prompt_opens_reasoning` helper tells from the rendered prompt).

Format decisions (all chunking-independent):
- Only a `<think>` at the very start of the output (after optional whitespace, which is dropped)
  opens reasoning. Without one, and without `starts_in_reasoning`, everything is content, verbatim
  (a later `<think>` or a stray `</think>` is content text).
- With `starts_in_reasoning`, a redundant leading `<think>` is dropped.
- Newlines (`\\n`, `\\r`) next to the tags are dropped: right after `<think>` (or at the start of
  reasoning that starts in the prompt), right before `</think>`, and right after `</think>`. So the
  example gives reasoning "reasoning" and content "answer". Other whitespace is kept.
- Only the first `</think>` closes reasoning. If it never comes, everything after `<think>` is
  reasoning (truncated output or a runaway think block); there is then no content.
"""
from __future__ import annotations

from awqserve.parsers._text import NEWLINES, WHITESPACE, HeldTextParser, split_held
from awqserve.parsers.events import ContentDelta, ParserEvent, ReasoningDelta

_OPENING, _REASONING, _CONTENT = "opening", "reasoning", "content"


class Qwen3ReasoningParser(HeldTextParser):
    """Streaming splitter of reasoning and content; one instance per generated sequence.

    Holds back at most a possible `<think>` at the start (with the whitespace before it), or a
    possible `</think>` prefix with the newlines before it; `finish()` releases what is held.
    """

    START = "<think>"
    END = "</think>"

    def __init__(self, starts_in_reasoning: bool = False) -> None:
        super().__init__()
        self._starts_in_reasoning = starts_in_reasoning
        self._state = _OPENING
        self._lstrip = False  # drop leading newlines: right after a tag

    @classmethod
    def prompt_opens_reasoning(cls, prompt: str) -> bool:
        """True when a rendered prompt ends inside an open think block (pass as
        `starts_in_reasoning`)."""
        return prompt.rstrip().endswith(cls.START)

    def finish(self) -> list[ParserEvent]:
        """End of output: release held text (a partial tag is text, not a tag)."""
        self._final = True
        out = self.feed("")
        self._done = True
        return out

    def _held_chars(self) -> str:
        """The characters a buffer made only of them is held whole for in this state (kept as a
        list of pieces, so a long run of newline deltas costs O(delta) each, not O(run))."""
        if self._state == _OPENING:
            return WHITESPACE
        return NEWLINES if self._state == _REASONING and not self._lstrip else ""

    # -- states: each returns True when it changed state and the loop should continue ----------
    def _step(self, out: list[ParserEvent]) -> bool:
        if self._state == _OPENING:
            return self._opening()
        if self._lstrip:
            self._buf = self._buf.lstrip(NEWLINES)
            if not self._buf:
                return False
            self._lstrip = False
        if self._state == _CONTENT:
            _emit(out, ContentDelta, self._buf)
            self._buf = ""
            return False
        return self._reasoning(out)

    def _opening(self) -> bool:
        rest = self._buf.lstrip(WHITESPACE)
        if rest.startswith(self.START):
            self._buf, self._state, self._lstrip = rest[len(self.START):], _REASONING, True
            return True
        if self.START.startswith(rest) and not self._final:
            return False  # maybe `<think>` is still coming
        # No opening tag: the text is the reasoning the prompt opened, or plain content.
        self._state = _REASONING if self._starts_in_reasoning else _CONTENT
        self._lstrip = self._starts_in_reasoning
        return True

    def _reasoning(self, out: list[ParserEvent]) -> bool:
        i = self._buf.find(self.END)
        if i == -1:
            emit, self._buf = (self._buf, "") if self._final else split_held(
                self._buf, (self.END,), NEWLINES)
            _emit(out, ReasoningDelta, emit)
            return False
        _emit(out, ReasoningDelta, self._buf[:i].rstrip(NEWLINES))
        self._buf, self._state, self._lstrip = self._buf[i + len(self.END):], _CONTENT, True
        return True


def _emit(out: list[ParserEvent], kind: type[ContentDelta] | type[ReasoningDelta],
          text: str) -> None:
    if text:
        out.append(kind(text))
