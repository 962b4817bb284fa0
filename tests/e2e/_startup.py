"""Checks on the /health answers a ServerProcess recorded while it started."""
from __future__ import annotations

from typing import Any

from awqserve.engine.progress import PHASES


def loading_sequence(startup_health: list[tuple[int, Any]]) -> list[tuple[str, float]]:
    """(phase, progress) of every 503 "loading" answer, in the order they were seen."""
    return [(b["phase"], b["progress"]) for status, b in startup_health
            if status == 503 and isinstance(b, dict) and b.get("status") == "loading"]


def assert_phases_in_order(startup_health: list[tuple[int, Any]], must_see: tuple[str, ...]) -> list[str]:
    """Phases only move forward, progress stays in [0, 1] and never falls within a phase, the start
    ends ready; returns the distinct phases seen."""
    seq = loading_sequence(startup_health)
    order = [PHASES.index(phase) for phase, _ in seq]
    assert order == sorted(order), seq
    assert all(0.0 <= f <= 1.0 for _, f in seq), seq
    for (p1, f1), (p2, f2) in zip(seq, seq[1:]):
        assert p1 != p2 or f2 >= f1, (p1, f1, f2)
    seen = list(dict.fromkeys(phase for phase, _ in seq))
    assert set(must_see) <= set(seen), seen
    assert startup_health[-1][0] == 200
    return seen
