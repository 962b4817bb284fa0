"""Start-up progress: which phase the engine is in, how far through it, and when it should end.

One `LoadProgress` per engine start. `build_engine` and its callees (the demo build, the weight
loader, the compile warm-up) move it forward through explicit calls — `begin(phase)` then
`update(done, total)` — so nothing here is a module global. Readers (the `/health` route, a terminal
bar, log lines) see immutable `ProgressSnapshot`s.

Invariants:
- Phases only move forward in `PHASES` order (a skipped phase is simply never entered); `fail()`
  may end any phase. After "ready" or "failed" nothing changes any more.
- Within a phase, `fraction` stays in [0, 1] and never decreases (a late, smaller `done` is kept at
  the old value), so a poller sees monotone progress.
- Thread-safe: any thread may update or read. Listeners are called outside the state lock, one at a
  time, at most every `notify_interval` seconds except on phase changes, which are always delivered.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence

PHASES: tuple[str, ...] = ("starting", "building_demo_model", "loading_weights", "allocating_cache",
                           "compiling", "ready")
log = logging.getLogger(__name__)
FAILED = "failed"
TERMINAL = ("ready", FAILED)

ProgressCallback = Callable[[float, float, str], None]
"""What callees receive: `report(done, total, detail)` within the phase their caller began."""


@dataclass(frozen=True)
class ProgressSnapshot:
    """The state at one instant. `fraction` is of the current phase; `eta_s` is None until a rate is known."""

    phase: str
    fraction: float
    done: float
    total: float | None
    unit: str
    detail: str
    phase_elapsed_s: float
    eta_s: float | None
    seq: int  # bumps on every change: renderers skip snapshots they have shown

    @property
    def finished(self) -> bool:
        return self.phase in TERMINAL

    def as_dict(self) -> dict[str, Any]:
        """The `/health` shape while loading: phase, progress (0..1) and the figures behind it."""
        out: dict[str, Any] = {"phase": self.phase, "progress": round(self.fraction, 4),
                               "phase_elapsed_s": round(self.phase_elapsed_s, 1),
                               "eta_s": None if self.eta_s is None else round(self.eta_s, 1)}
        if self.total is not None:
            out.update(done=self.done, total=self.total, unit=self.unit)
        if self.detail:
            out["detail"] = self.detail
        return out


class ProgressListener(Protocol):
    def on_progress(self, snap: ProgressSnapshot) -> None: ...


def estimate_eta(done: float, total: float | None, elapsed: float) -> float | None:
    """Seconds left at the phase's average rate so far; None before any progress or without a total."""
    if total is None or total <= 0 or done <= 0 or elapsed <= 0:
        return None
    return max(total - done, 0.0) * elapsed / done


class LoadProgress:
    """The start-up state machine (see the module docstring for its invariants)."""

    def __init__(self, listeners: Sequence[ProgressListener] = (), *, notify_interval: float = 0.1,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._notify_lock = threading.Lock()
        self._listeners = list(listeners)
        self._interval = notify_interval
        self._clock = clock
        self._phase = PHASES[0]
        self._started = clock()
        self._done = 0.0
        self._total: float | None = None
        self._unit = ""
        self._detail = ""
        self._seq = 0
        self._last_notify = float("-inf")
        self.phases_seen: list[str] = [PHASES[0]]

    # -- writers ---------------------------------------------------------------------------------
    def begin(self, phase: str, total: float | None = None, unit: str = "", detail: str = "") -> None:
        """Enter `phase` (later in PHASES than the current one); counters start at 0."""
        with self._lock:
            if self._phase in TERMINAL:
                return
            if phase not in PHASES or PHASES.index(phase) <= PHASES.index(self._phase):
                raise ValueError(f"progress phase {phase!r} cannot follow {self._phase!r}")
            self._enter(phase, total, unit, detail)
            if phase == "ready":
                self._done = self._total = 1.0
        self._notify(force=True)

    def update(self, done: float, total: float | None = None, detail: str | None = None) -> None:
        """Progress within the current phase: `done` of `total` (a new total replaces the old one)."""
        with self._lock:
            if self._phase in TERMINAL:
                return
            if total is not None:
                self._total = float(total)
            self._done = max(self._done, float(done))
            if detail is not None:
                self._detail = detail
            self._seq += 1
        self._notify(force=False)

    def reporter(self) -> ProgressCallback:
        """`update` in the callback shape callees take (they know nothing of phases)."""
        return lambda done, total, detail: self.update(done, total, detail)

    def ready(self) -> None:
        self.begin("ready")

    def fail(self, reason: str = "") -> None:
        """End start-up unsuccessfully (from any phase): renderers close, pollers see "failed"."""
        with self._lock:
            if self._phase in TERMINAL:
                return
            self._enter(FAILED, self._total, self._unit, reason)
        self._notify(force=True)

    def add_listener(self, listener: ProgressListener) -> None:
        with self._notify_lock:
            self._listeners.append(listener)

    # -- readers ---------------------------------------------------------------------------------
    @property
    def phase(self) -> str:
        return self._phase

    def snapshot(self) -> ProgressSnapshot:
        with self._lock:
            return self._snapshot()

    # -- internals -------------------------------------------------------------------------------
    def _enter(self, phase: str, total: float | None, unit: str, detail: str) -> None:
        self._phase, self._started = phase, self._clock()
        self._done, self._total, self._unit, self._detail = 0.0, total, unit, detail
        self._seq += 1
        self.phases_seen.append(phase)

    def _snapshot(self) -> ProgressSnapshot:
        elapsed = self._clock() - self._started
        total = self._total
        fraction = min(self._done / total, 1.0) if total else 0.0
        if self._phase == "ready":
            fraction = 1.0
        return ProgressSnapshot(self._phase, fraction, self._done, total, self._unit, self._detail, elapsed,
                                estimate_eta(self._done, total, elapsed), self._seq)

    def _notify(self, *, force: bool) -> None:
        now = self._clock()
        if not force and now - self._last_notify < self._interval:
            return
        # One notifier at a time, so a listener never sees snapshots out of order.
        with self._notify_lock:
            self._last_notify = now
            snap = self.snapshot()
            for listener in list(self._listeners):
                try:
                    listener.on_progress(snap)
                except Exception:  # noqa: BLE001 - a broken display (closed terminal) must not stop a load
                    log.exception("progress listener %r failed; removed", listener)
                    self._listeners.remove(listener)
