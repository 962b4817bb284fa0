"""The issue-#16 stress scenarios at full size, on awqserve and on llama.cpp's llama-server (same drivers).

    python bench/stress.py                                   # both systems, 10-minute soaks
    python bench/stress.py --systems awqserve --soak 60 --out /tmp/stress.json

Scenarios (bench/stress_load.py, stress_slow.py, soak.py): overload at 10x capacity (400 requests;
capacity = 8 running + 32 queued for awqserve, 8 slots for llama-server, whose queue has no bound), a
64-stream disconnect storm (two waves of 32), 51 slow clients, SIGTERM during 8 long streams, SIGKILL and
restart, a soak at 8 concurrent. Both run the demo model (awqserve: its AWQ build, eager, 2 threads;
llama-server: the same GGUF, -np 8, -t 2). The pass/fail checks are tests/stress (pytest -m stress);
this writes the figures (JSON) for docs/RELIABILITY.md.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "bench"), str(REPO / "tests" / "stress")]

from _idle import idle_figures, is_idle  # noqa: E402
from _server import StressServer, free_port  # noqa: E402
from peers import demo_gguf, llama_server_binary  # noqa: E402
from soak import soak  # noqa: E402
from stress_load import awqserve_gauges, disconnect_storm, metric_value, overload  # noqa: E402
from stress_slow import close_all, closed_by_server, open_slow_clients  # noqa: E402


class Target:
    """One running server: `base_url`, `proc`, the model name, and how to tell that it is idle."""

    def __init__(self, system: str, port: int | None = None) -> None:
        self.system = system
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._awq: StressServer | None = None
        if system == "awqserve":
            from awqserve.tools.demo_model import ensure_demo_model

            self._awq = StressServer(Path(ensure_demo_model()), port=self.port)
            self.proc = self._awq.proc
        else:
            binary = llama_server_binary()
            cmd = [str(binary), "-m", str(demo_gguf()), "-np", "8", "-c", str(8 * 512), "--cont-batching",
                   "-t", "2", "-tb", "2", "--metrics", "--host", "127.0.0.1", "--port", str(self.port)]
            log = open(f"/tmp/llama-server-stress-{self.port}.log", "ab")  # noqa: SIM115 - lives with the process
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                         env={"LD_LIBRARY_PATH": str(binary.parent)})

    def ready(self, timeout: float = 600.0) -> "Target":
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.system} exited with {self.proc.returncode}")
            try:
                if httpx.get(self.base_url + "/health", timeout=2).status_code == 200:
                    self.start_s = time.monotonic() - t0
                    self.model = httpx.get(self.base_url + "/v1/models", timeout=10).json()["data"][0]["id"]
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"{self.system} not ready")

    def gauges(self) -> Callable[[httpx.Response, httpx.Response], dict[str, float]]:
        if self._awq is not None:
            return awqserve_gauges
        return lambda m, h: {"running": metric_value(m.text, "llamacpp:requests_processing"),
                             "waiting": metric_value(m.text, "llamacpp:requests_deferred")}

    def idle(self) -> bool:
        if self._awq is not None:
            return is_idle(idle_figures(self._awq))
        g = self.gauges()(httpx.get(self.base_url + "/metrics", timeout=10), httpx.Response(200))
        return httpx.get(self.base_url + "/health", timeout=10).status_code == 200 and not any(g.values())

    def seconds_to_idle(self, timeout: float = 60.0) -> float | None:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.idle():
                return round(time.monotonic() - t0, 3)
            time.sleep(0.02)
        return None

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


# ---------------------------------------------------------------- scenarios on a running server

def run_overload(t: Target) -> dict[str, Any]:
    rep = asyncio.run(overload(t.base_url, t.model, requests=400, max_tokens=64, timeout=900,
                               read_gauges=t.gauges()))
    return {**rep.summary(), "seconds_to_idle": t.seconds_to_idle()}


def run_storm(t: Target) -> dict[str, Any]:
    waves, drops = [], {}
    for _ in range(2):
        d = asyncio.run(disconnect_storm(t.base_url, t.model, streams=32, max_tokens=256))
        waves.append(t.seconds_to_idle())
        drops = {k: drops.get(k, 0) + v for k, v in d.items()}
    return {**drops, "seconds_to_idle_per_wave": waves}


def _latency(client: httpx.Client, model: str, n: int = 5) -> float:
    out = []
    for i in range(n):
        t0 = time.monotonic()
        client.post("/v1/completions", json={"model": model, "prompt": f"Hello {i}", "max_tokens": 8,
                                             "temperature": 0}).raise_for_status()
        out.append(time.monotonic() - t0)
    return round(statistics.median(out), 3)


def run_slow(t: Target) -> dict[str, Any]:
    with httpx.Client(base_url=t.base_url, timeout=120) as c:
        base = _latency(c, t.model)
        slow = open_slow_clients(t.port, 51, t.model, max_tokens=400)
        try:
            during = _latency(c, t.model)
            closed = closed_by_server(slow, timeout=20.0, kinds=("headers", "body", "no_read"))
        finally:
            close_all(slow)
    return {"normal_p50_s_before": base, "normal_p50_s_during": during,
            **{f"closed_within_20s_{k}": f"{sum(x != float('inf') for x in v)}/{len(v)}" for k, v in closed.items()}}


def run_soak(t: Target, duration: float) -> dict[str, Any]:
    return asyncio.run(soak(t.base_url, t.proc.pid, t.model, duration=duration, concurrency=8, max_tokens=64))


# ---------------------------------------------------------------- scenarios with their own servers

def run_sigterm(system: str) -> dict[str, Any]:
    t = Target(system).ready()
    done: list[bool] = []

    def stream(i: int) -> None:
        body = {"model": t.model, "prompt": f"Story {i}", "max_tokens": 256, "stream": True, "ignore_eos": True}
        last = ""
        try:
            with httpx.Client(timeout=600) as c, c.stream("POST", t.base_url + "/v1/completions", json=body) as r:
                for line in r.iter_lines():
                    last = line or last
        except httpx.HTTPError:
            pass
        done.append(last == "data: [DONE]")

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(8)]
    for th in threads:
        th.start()
    time.sleep(3.0)
    t0 = time.monotonic()
    t.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    try:
        late = httpx.post(t.base_url + "/v1/completions", json={"model": t.model, "prompt": "late", "max_tokens": 2},
                          timeout=10).status_code
    except httpx.HTTPError as e:
        late = type(e).__name__
    code = t.proc.wait(600)
    for th in threads:
        th.join(60)
    return {"streams_finished": f"{sum(done)}/8", "new_request_during_drain": late, "exit_code": code,
            "exit_s": round(time.monotonic() - t0, 1)}


def run_sigkill_restart(system: str) -> dict[str, Any]:
    t = Target(system).ready()
    t.proc.send_signal(signal.SIGKILL)
    t.proc.wait(30)
    again = Target(system, port=t.port)
    try:
        again.ready(timeout=600)
        ok = httpx.post(again.base_url + "/v1/completions", timeout=60,
                        json={"model": again.model, "prompt": "hi", "max_tokens": 4}).status_code
        return {"restart_healthy": True, "restart_s": round(again.start_s, 1), "first_request": ok}
    except (RuntimeError, TimeoutError) as e:
        return {"restart_healthy": False, "error": str(e)}
    finally:
        again.stop()


def run_system(system: str, soak_s: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    t = Target(system).ready()
    out["start_s"] = round(t.start_s, 1)
    try:
        for name, fn in (("overload_10x", run_overload), ("disconnect_storm", run_storm), ("slow_clients", run_slow),
                         ("soak", lambda t: run_soak(t, soak_s))):
            out[name] = _scenario(system, name, lambda: fn(t))
    finally:
        t.stop()
    out["sigterm_8_streams"] = _scenario(system, "sigterm", lambda: run_sigterm(system))
    out["sigkill_restart"] = _scenario(system, "sigkill_restart", lambda: run_sigkill_restart(system))
    return out


def _scenario(system: str, name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run one scenario; a failure is recorded as its result, and the run goes on."""
    print(f"[{system}] {name} ...", flush=True)
    try:
        result = fn()
    except Exception as e:  # noqa: BLE001 - a scenario that breaks is a figure too
        result = {"failed": f"{type(e).__name__}: {e}"}
    print(json.dumps(result), flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--systems", nargs="+", default=["awqserve", "llama-server"])
    ap.add_argument("--soak", type=float, default=600.0, help="soak seconds per system")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks" / f"stress-{time.strftime('%Y-%m-%d')}.json")
    args = ap.parse_args(argv)
    result: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M"), "loadavg_start": Path("/proc/loadavg").read_text().split()[:3]}
    for system in args.systems:
        result[system] = run_system(system, args.soak)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
    result["loadavg_end"] = Path("/proc/loadavg").read_text().split()[:3]
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
