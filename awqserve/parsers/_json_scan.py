"""Find where one JSON value ends in streamed text, without parsing it.

The scanner tracks only what decides the end of a value: nesting depth, whether it is inside a
string, and a pending backslash escape. It jumps between the characters that matter with a regex,
so each character of the output is looked at once (O(total length), no re-parsing of a growing
buffer). It does not validate: the caller runs `json.loads` once on the complete value.
"""
from __future__ import annotations

import re

_IN_STRING = re.compile(r'["\\]')
_OUTSIDE = re.compile(r'["{}\[\]]')
_SCALAR_END = re.compile(r"[\s,}\]]")
SCALAR_START = "-0123456789tfn"


class ValueScanner:
    """Scans one JSON value that starts at the first character given to `scan`.

    Kinds, decided by the first character: a string (`"`), a container (`{` or `[`), or a scalar
    (number, true, false, null). A scalar has no closing character; it ends just before the first
    whitespace, `,`, `}` or `]`, which is left unconsumed for the caller.
    """

    def __init__(self, first: str) -> None:
        self.first = first
        self.kind = "string" if first == '"' else "container" if first in "{[" else "scalar"
        self._depth = 0
        self._in_string = False
        self._escape = False

    def scan(self, text: str, pos: int) -> tuple[int, bool]:
        """Consume `text` from `pos`; returns (position after the consumed part, value complete)."""
        if self.kind == "scalar":
            m = _SCALAR_END.search(text, pos)
            return (len(text), False) if m is None else (m.start(), True)
        n = len(text)
        while pos < n:
            if self._escape:  # the character after a backslash is never special
                self._escape = False
                pos += 1
                continue
            m = (_IN_STRING if self._in_string else _OUTSIDE).search(text, pos)
            if m is None:
                return n, False
            pos = m.end()
            if self._on_special(m.group()):
                return pos, True
        return n, False

    def _on_special(self, c: str) -> bool:
        """Update the state for one structural character; True when the value just ended."""
        if self._in_string:
            if c == "\\":
                self._escape = True
                return False
            self._in_string = False
            return self._depth == 0  # a bare string value ends with its closing quote
        if c == '"':
            self._in_string = True
        elif c in "{[":
            self._depth += 1
        else:
            self._depth -= 1
            return self._depth == 0
        return False
