"""Tag-search helpers shared by the parsers: where a tag starts, and what to hold back.

A streaming parser may only emit text that can no longer turn into markup. At the end of its
buffer that is everything except (a) the longest suffix that is a proper prefix of a tag and
(b) the run of "strippable" characters right before it, which is dropped if a tag follows.
Held text is always short (a tag prefix plus a whitespace run) and is searched again on the next
delta only, so the total work stays linear in the output length.
"""
from __future__ import annotations

from collections.abc import Sequence

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
