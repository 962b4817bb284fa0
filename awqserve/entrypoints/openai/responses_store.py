"""The bounded in-memory store behind `previous_response_id`, `GET` and `DELETE /v1/responses/{id}`.

A least-recently-used map of at most `capacity` entries (`--responses-store-size`; 0 keeps nothing:
the server is stateless). An entry is a finished response as it was returned and its conversation:
the input items of every turn up to it, then its own output items, as plain dicts that validate as
input items again. Instructions are not part of the conversation (they are never carried over).

Not thread-safe by design: every caller runs on the server's event loop. Entries are never
mutated after `put`; readers get the stored objects themselves and must not change them.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class StoredResponse:
    body: dict[str, Any]  # the Response object as returned
    conversation: tuple[dict[str, Any], ...]  # input items so far + this response's output items


class ResponseStore:
    """LRU by last use (`put` or `get`); the oldest entry goes when a `put` exceeds the capacity."""

    def __init__(self, capacity: int) -> None:
        if capacity < 0:
            raise ValueError("capacity must be >= 0")
        self.capacity = capacity
        self._entries: OrderedDict[str, StoredResponse] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.capacity > 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, response_id: object) -> bool:
        return response_id in self._entries

    def put(self, response_id: str, entry: StoredResponse) -> None:
        """Keep `entry` (no-op when the store is disabled), evicting the least recently used beyond capacity."""
        if not self.enabled:
            return
        self._entries[response_id] = entry
        self._entries.move_to_end(response_id)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def get(self, response_id: str) -> StoredResponse | None:
        entry = self._entries.get(response_id)
        if entry is not None:
            self._entries.move_to_end(response_id)
        return entry

    def delete(self, response_id: str) -> bool:
        """True when the response was there."""
        return self._entries.pop(response_id, None) is not None
