"""Recurrent-state slots for hybrid models (Qwen3-Next GDN layers). Pure Python bookkeeping.

Each running sequence of a hybrid model owns one slot: its row in every per-layer conv and
recurrent state tensor. A slot is taken when the sequence is first scheduled and returned when it
finishes, is aborted or is preempted (preemption recomputes from scratch, so the state is rebuilt).
A recycled row still holds its previous owner's state; it is never read as such, because a sequence
with no computed tokens starts from a zero state in the layer itself (layers/gdn.py `_initial`).
"""
from __future__ import annotations

from collections import deque


class StatePool:
    """`num_slots` slots; `allocate` returns a free slot or None when all are taken."""

    def __init__(self, num_slots: int) -> None:
        self.num_slots = num_slots
        self._free: deque[int] = deque(range(num_slots))
        self._used: set[int] = set()

    @property
    def num_free(self) -> int:
        return len(self._free)

    @property
    def usage(self) -> float:
        return len(self._used) / self.num_slots if self.num_slots else 0.0

    def allocate(self) -> int | None:
        if not self._free:
            return None
        slot = self._free.popleft()
        self._used.add(slot)
        return slot

    def free(self, slot: int) -> None:
        if slot not in self._used:
            raise ValueError(f"state slot {slot} is not allocated")
        self._used.remove(slot)
        self._free.append(slot)
