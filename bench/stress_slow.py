"""Slow clients for the stress scenarios: stalled headers, stalled bodies, a reader that never reads.

Raw sockets to 127.0.0.1 (httpx cannot stall on purpose). `open_slow_clients` opens them; `closed_by_server`
waits (bounded) until the server has closed each one, telling "closed" (EOF or reset) from "still open".
Works against any HTTP server, so llama-server is measured the same way.
"""
from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass


@dataclass
class SlowClient:
    kind: str  # "headers" | "body" | "no_read"
    sock: socket.socket


def _connect(port: int, rcvbuf: int | None = None) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:  # a tiny window: the server's writes back up quickly
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.connect(("127.0.0.1", port))
    return s


def open_slow_clients(port: int, count: int, model: str, max_tokens: int, max_no_read: int = 4) -> list[SlowClient]:
    """`count` connections, kinds in rotation: half a request head; a head plus part of the body;
    a whole streamed request whose response is never read (at most `max_no_read` of these: each holds
    a running slot until its generation ends or the write stall drops it, so more would measure the
    batch size, not the server's defences)."""
    clients: list[SlowClient] = []
    for i in range(count):
        kind = ("headers", "body", "no_read")[i % 3]
        if kind == "no_read" and sum(c.kind == "no_read" for c in clients) >= max_no_read:
            kind = ("headers", "body")[i % 2]
        s = _connect(port, rcvbuf=4096 if kind == "no_read" else None)
        if kind == "headers":
            s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n")
        elif kind == "body":
            s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 1000\r\n\r\n{\"prompt\": \"stall")
        else:
            body = json.dumps({"model": model, "prompt": f"Tell a long story {i}.", "max_tokens": max_tokens,
                               "stream": True, "ignore_eos": True}).encode()
            s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                      + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        clients.append(SlowClient(kind, s))
    return clients


def _is_closed(s: socket.socket) -> bool:
    """True once the server closed (EOF or reset); drains whatever is readable without blocking."""
    s.setblocking(False)
    try:
        while True:
            data = s.recv(65536)
            if not data:
                return True
    except BlockingIOError:
        return False
    except OSError:
        return True


def closed_by_server(clients: list[SlowClient], timeout: float, kinds: tuple[str, ...]) -> dict[str, list[float]]:
    """Seconds until the server closed each client of `kinds` (`inf` if it had not within `timeout`)."""
    t0 = time.monotonic()
    left = {i: c for i, c in enumerate(clients) if c.kind in kinds}
    when: dict[int, float] = {}
    while left and time.monotonic() - t0 < timeout:
        for i, c in list(left.items()):
            if _is_closed(c.sock):
                when[i] = time.monotonic() - t0
                del left[i]
        time.sleep(0.05)
    out: dict[str, list[float]] = {k: [] for k in kinds}
    for i, c in enumerate(clients):
        if c.kind in kinds:
            out[c.kind].append(when.get(i, float("inf")))
    return out


def close_all(clients: list[SlowClient]) -> None:
    for c in clients:
        try:
            c.sock.close()
        except OSError:
            pass
