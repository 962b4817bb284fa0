"""Showing start-up progress: a tqdm bar per phase on a terminal, periodic log lines elsewhere.

`console_progress()` picks one by whether stderr is a terminal, so a newcomer at a shell sees bars
with an ETA and a server under systemd/CI gets one readable line every few seconds instead of a
stream of carriage returns. Both are `ProgressListener`s of a `LoadProgress` (engine/progress.py)
and only ever see snapshots, in order.
"""
from __future__ import annotations

import contextlib
import logging
import sys
import time
from typing import Any, TextIO

from awqserve.engine.progress import LoadProgress, ProgressSnapshot

log = logging.getLogger("awqserve.progress")

PHASE_LABELS = {
    "starting": "starting", "building_demo_model": "building demo model (once)",
    "loading_weights": "loading weights", "allocating_cache": "allocating KV cache",
    "compiling": "compiling decode step", "ready": "ready", "failed": "failed",
}


def label(phase: str) -> str:
    return PHASE_LABELS.get(phase, phase.replace("_", " "))


def format_duration(seconds: float) -> str:
    """45s, 1m05s, 2h03m: short enough for a status line."""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def format_amount(done: float, total: float | None, unit: str) -> str:
    """'19.1 of 45.0 GiB' for bytes, '3/30 layers' otherwise; '' without a total."""
    if total is None:
        return ""
    if unit == "bytes":
        scale, name = next(((1 << s, n) for s, n in ((30, "GiB"), (20, "MiB"), (10, "KiB")) if total >= 1 << s),
                           (1, "B"))
        return f"{done / scale:.1f} of {total / scale:.1f} {name}"
    return f"{int(done)}/{int(total)} {unit}".rstrip()


def describe(snap: ProgressSnapshot) -> str:
    """One line: 'loading weights: 42% (19.1 of 45.0 GiB, shard 3/9), about 1m05s left'."""
    figures = ", ".join(x for x in (format_amount(snap.done, snap.total, snap.unit), snap.detail) if x)
    text = f"{label(snap.phase)}: {snap.fraction:.0%}" if snap.total else label(snap.phase)
    if figures:
        text += f" ({figures})"
    if snap.eta_s is not None and not snap.finished:
        text += f", about {format_duration(snap.eta_s)} left"
    return text


class LogRenderer:
    """Log lines: one when a phase starts, then at most one per `interval` seconds, and one at the end."""

    def __init__(self, logger: logging.Logger = log, interval: float = 5.0) -> None:
        self.logger = logger
        self.interval = interval
        self._phase = ""
        self._last = 0.0
        self._t0 = time.monotonic()

    def on_progress(self, snap: ProgressSnapshot) -> None:
        now = time.monotonic()
        if snap.phase == "ready":
            self.logger.info("start-up: ready after %s", format_duration(now - self._t0))
        elif snap.phase == "failed":
            self.logger.info("start-up failed during %s", label(self._phase) if self._phase else "start")
        elif snap.phase != self._phase:
            self.logger.info("start-up: %s", describe(snap))
        elif now - self._last >= self.interval:
            self.logger.info("start-up: %s", describe(snap))
        else:
            return
        self._phase, self._last = snap.phase, now


_NO_TOTAL = "{desc}: {elapsed}{postfix}"  # a phase of unknown size: what it is doing and for how long


def _count(x: float | None) -> float | None:
    """Whole numbers as ints, so tqdm prints '3/39 steps', not '3.0/39.0 steps'."""
    return int(x) if x is not None and float(x).is_integer() else x


class TerminalRenderer:
    """A tqdm bar per phase on `stream` (bytes scaled as KiB/MiB/GiB); log lines are routed above the
    bar while it is shown, so they do not tear it."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self._bar: Any = None  # tqdm is untyped
        self._phase = ""
        self._seq = -1
        self._redirect = contextlib.ExitStack()
        self._redirecting = False

    def on_progress(self, snap: ProgressSnapshot) -> None:
        if snap.seq == self._seq and snap.phase == self._phase:
            return
        self._seq = snap.seq
        if snap.phase != self._phase:
            self._close_bar()
            self._phase = snap.phase
            if snap.finished:
                self._redirect.close()
                self._redirecting = False
                return
            self._open_bar(snap)
        self._advance(snap)

    def _open_bar(self, snap: ProgressSnapshot) -> None:
        from tqdm import tqdm  # type: ignore[import-untyped]  # tqdm ships no type information
        from tqdm.contrib.logging import logging_redirect_tqdm  # type: ignore[import-untyped]

        if not self._redirecting:  # first bar: route log lines above the bars until the end
            self._redirect.enter_context(logging_redirect_tqdm())
            self._redirecting = True
        scaled = snap.unit == "bytes"
        self._bar = tqdm(total=_count(snap.total), desc=label(snap.phase), file=self.stream, leave=True,
                         unit="B" if scaled else (snap.unit or "it"),
                         unit_scale=scaled, unit_divisor=1024 if scaled else 1000, dynamic_ncols=True,
                         mininterval=0.2, smoothing=0.1, bar_format=None if snap.total else _NO_TOTAL)

    def _advance(self, snap: ProgressSnapshot) -> None:
        bar = self._bar
        if bar is None:
            return
        if snap.total is not None and bar.total != _count(snap.total):
            bar.total, bar.bar_format = _count(snap.total), None  # a phase that learns its size
        if snap.detail:
            bar.set_postfix_str(snap.detail, refresh=False)
        if snap.done > bar.n:
            bar.update(_count(snap.done) - bar.n)
        else:
            bar.refresh()

    def _close_bar(self) -> None:
        bar, self._bar = self._bar, None
        if bar is None:
            return
        if bar.total is not None and bar.n < bar.total:  # a phase that moves on is complete
            bar.update(bar.total - bar.n)
        bar.leave = bar.total is not None  # a phase of unknown size leaves nothing worth keeping
        bar.close()


def console_progress(stream: TextIO | None = None) -> LoadProgress:
    """A LoadProgress shown as bars when `stream` (default stderr) is a terminal, else as log lines."""
    out = stream if stream is not None else sys.stderr
    tty = bool(getattr(out, "isatty", lambda: False)())
    return LoadProgress([TerminalRenderer(out) if tty else LogRenderer()])


def log_progress() -> LoadProgress:
    """A LoadProgress reported through logging only (library use: silent unless logging is configured)."""
    return LoadProgress([LogRenderer()])
