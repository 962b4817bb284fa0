"""Tag-search helpers shared by the parsers: where a tag starts, and what to hold back.

A streaming parser may only emit text that can no longer turn into markup. At the end of its
buffer that is everything except (a) the longest suffix that is a proper prefix of a tag and
(b) the run of "strippable" characters right before it, which is dropped if a tag follows.
Held text is always short (a tag prefix plus a whitespace run) and is searched again on the next
delta only, so the total work stays linear in the output length.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from awqserve.parsers.events import ParserEvent

WHITESPACE = " \t\r\n"
NEWLINES = "\r\n"


def partial_tag_len(text: str, tags: Sequence[str]) -> int:
    """Length of the longest suffix of `text` that is a proper, non-empty prefix of a tag."""
    best = 0
    for tag in tags:
        for k in range(min(len(tag) - 1, len(text)), best, -1):
            if text.endswith(tag[:k]):
                best = k
                break
    return best


def split_held(text: str, tags: Sequence[str], strip: str) -> tuple[str, str]:
    """Split tag-free `text` into (safe to emit, held back): the held part is a trailing run of
    `strip` characters followed by a possible tag prefix."""
    emit = text[:len(text) - partial_tag_len(text, tags)].rstrip(strip)
    return emit, text[len(emit):]


def find_first(text: str, tags: Sequence[str]) -> tuple[int, str] | None:
    """The earliest complete occurrence of any tag as (position, tag), or None."""
    best: tuple[int, str] | None = None
    for tag in tags:
        i = text.find(tag)
        if i != -1 and (best is None or i < best[0]):
            best = (i, tag)
    return best


class HeldTextParser(ABC):
    """The feed loop both parsers share: text goes into `_buf`, `_step` consumes it state by state, and a
    buffer made only of `_held_chars()` is kept whole as a list of pieces (`_run`), so a long run of such
    deltas (newlines, spaces) costs O(delta) each instead of O(run)."""

    def __init__(self) -> None:
        self._buf = ""
        self._run: list[str] = []
        self._final = False  # finish() is flushing: nothing is held any more
        self._done = False

    @abstractmethod
    def _held_chars(self) -> str:
        """The characters a buffer made only of them is held for in the current state ("" for none)."""

    @abstractmethod
    def _step(self, out: list[ParserEvent]) -> bool:
        """Consume what the current state can from `_buf`; True when the state changed (loop again)."""

    def feed(self, delta: str) -> list[ParserEvent]:
        """Consume the next piece of model output."""
        if self._done:
            raise RuntimeError("feed() after finish()")
        held = self._held_chars()
        if self._run and not self._final and held and not delta.strip(held):
            self._run.append(delta)  # still only characters that may precede a tag
            return []
        self._buf = "".join(self._run) + self._buf + delta
        self._run = []
        out: list[ParserEvent] = []
        while self._step(out):
            pass
        held = self._held_chars()
        if held and self._buf and not self._buf.strip(held):
            self._run, self._buf = [self._buf], ""
        return out
