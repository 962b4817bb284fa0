"""One command for the whole CPU comparison: awqserve vs llama.cpp vs transformers on the demo model.

    python bench/run_cpu_compare.py [--quick] [--skip-peer transformers] [--skip-peer awqserve] ...

Runs, one system at a time on the same machine in the same run: memory bandwidth; single stream and
prefill in-process (awqserve `LLM`, llama-cpp-python, transformers), each system in its own child
process so one crash or hang costs only that system's numbers; then `awqserve serve` and llama.cpp's
`llama-server` one after the other, each driven by the same load generator (bench/loadgen.py).
Writes docs/benchmarks/cpu-<date>[-quick].{md,json} and the PNG plots (bench/report.py). Anything
absent or failing is reported as "n/a" with its reason.
"""
from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import loadgen  # noqa: E402
import peers  # noqa: E402
from peers import Unavailable  # noqa: E402

SYSTEMS = ("awqserve", "llama-cpp-python", "llama-server", "transformers")
ALIASES = {"llama.cpp": ("llama-cpp-python", "llama-server"), "llamacpp": ("llama-cpp-python", "llama-server")}
LOG_DIR = Path("/tmp/awqserve-bench-logs")


def make_plan(quick: bool) -> dict[str, Any]:
    """Workload sizes. Quick is a ~3-minute smoke run: fewer lengths, levels, repetitions, requests."""
    if quick:
        return {"single_reps": 1, "max_new": 128, "prefill_lengths": [512, 2048], "prefill_lengths_tf": [512],
                "prefill_reps": 1, "concurrency": [1, 16], "requests_per_level": {1: 2, 16: 16},
                "offline_requests": 16, "worker_timeout_s": 420, "server_start_s": 300, "level_budget_s": 240}
    return {"single_reps": 3, "max_new": 128, "prefill_lengths": [512, 2048, 8192], "prefill_lengths_tf": [512, 2048],
            "prefill_reps": 2, "concurrency": [1, 4, 16, 32],
            "requests_per_level": {c: max(8, 3 * c) for c in (1, 4, 16, 32)},
            "offline_requests": 64, "worker_timeout_s": 1800, "server_start_s": 900, "level_budget_s": 900}


# ---------------------------------------------------------------- child-process workers

def worker_main(args: argparse.Namespace) -> int:
    """Child process: run the asked tasks for one system; print one `RESULT <json>` line."""
    plan = json.loads(args.plan)
    out: dict[str, Any] = {}
    if args.worker == "bandwidth":
        out = peers.memory_bandwidth()
    else:
        from prefill import measure_prefill
        from single_stream import chat_prompt_ids, make_engine, measure_offline, measure_single

        tok = peers.Tokenizer(peers.demo_gguf())
        corpus = tok.encode(loadgen.corpus_text())
        t0 = time.perf_counter()
        engine = make_engine(args.system, args.awq_model, args.threads)
        out["load_s"] = time.perf_counter() - t0
        out["loader"] = getattr(engine, "loader", None)
        tasks = {
            "single": lambda: measure_single(engine, chat_prompt_ids(tok), plan["max_new"], plan["single_reps"]),
            "prefill": lambda: measure_prefill(engine, corpus, plan["lengths"], plan["prefill_reps"]),
            "offline": lambda: measure_offline(engine, loadgen.offline_requests(corpus, plan["offline_requests"])),
        }
        for name in args.tasks.split(","):
            try:
                out[name] = tasks[name]()
            except Exception as e:  # one task failing keeps the others' numbers
                out[name] = {"error": f"{type(e).__name__}: {e}"[:300]}
                traceback.print_exc()
            print("RESULT " + json.dumps(out), flush=True)  # cumulative: a later timeout keeps these
    print("RESULT " + json.dumps(out), flush=True)
    return 0


def run_worker(argv: list[str], timeout_s: float) -> dict[str, Any]:
    """Run this file as a worker; its RESULT, or {"error": why} (exit code, last stderr line, timeout)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), *argv]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as e:  # keep the tasks that finished; name the one cut off
        text = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        done = next((json.loads(l[7:]) for l in reversed(text.splitlines()) if l.startswith("RESULT ")), {})
        tasks = argv[argv.index("--tasks") + 1].split(",") if "--tasks" in argv else []
        pending = [t for t in tasks if t not in done]
        why = f"timed out after {timeout_s:.0f}s"
        return {**done, **{t: {"error": why} for t in pending}} if tasks else {"error": why}
    for line in reversed(p.stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    errs = [l for l in p.stderr.strip().splitlines() if l.strip()]
    why = next((l for l in reversed(errs) if "Error" in l or "error" in l), errs[-1] if errs else "")
    return {"error": f"exit {p.returncode}: {why.strip()[:300]}"}


# ---------------------------------------------------------------- servers

def sweep(srv: peers.ManagedServer, corpus: list[int], plan: dict[str, Any], levels: list[int],
          chat_reps: int) -> dict[str, Any]:
    """Warm up, single stream over HTTP (chat), then each concurrency level with the same load generator."""
    out: dict[str, Any] = {"levels": {}}
    asyncio.run(loadgen.warm_up(srv.base_url, corpus[:32]))
    if chat_reps:
        runs = [asyncio.run(loadgen.chat_single(srv.base_url, peers.CHAT_MESSAGES, plan["max_new"],
                                                plan["level_budget_s"]))
                for _ in range(chat_reps)]
        bad = [r.error for r in runs if r.error]
        out["single_http"] = {"error": bad[0]} if bad else {
            "decode_tok_s": statistics.median(r.decode_tok_s for r in runs),
            "ttft_ms": 1e3 * statistics.median(r.ttft_s for r in runs), "new_tokens": plan["max_new"],
            "reps": chat_reps}
    if chat_reps:
        out["prefill_http"] = prefill_http(srv.base_url, corpus, plan)
    for c in levels:
        reqs = loadgen.serving_requests(corpus, plan["requests_per_level"][c], seed=1000 + c, max_tokens=plan["max_new"])
        out["levels"][str(c)] = asyncio.run(loadgen.run_level(srv.base_url, reqs, c, plan["level_budget_s"]))
        print(f"  {srv.name} c={c}: {out['levels'][str(c)]['output_tok_s']:.1f} tok/s, "
              f"errors {out['levels'][str(c)]['errors']}", flush=True)
    return out


def prefill_http(base_url: str, corpus: list[int], plan: dict[str, Any]) -> dict[str, Any]:
    """Per prompt length: median TTFT of fresh prompts (distinct corpus windows: no prefix reuse)."""
    out: dict[str, Any] = {}
    for i, n in enumerate(plan.get("prefill_http_lengths", [512])):  # llama-server -np 16: 1024 per slot
        prompts = loadgen.windows(corpus, [n] * plan["prefill_reps"], 500 + i)
        runs = [asyncio.run(loadgen.prefill_single(base_url, p, plan["level_budget_s"])) for p in prompts]
        bad = [r.error for r in runs if r.error]
        out[str(n)] = {"error": bad[0]} if bad else {
            "prompt_tokens": n, "ttft_ms": 1e3 * statistics.median(r.ttft_s for r in runs), "reps": len(runs)}
    return out


def shown(cmd: list[str]) -> str:
    """A server command as a reader would type it: program names without their install paths."""
    head = ["python"] if Path(cmd[0]).name.startswith("python") else [Path(cmd[0]).name]
    return " ".join(head + [Path(c).name if c.endswith(".gguf") else c for c in cmd[1:]])


def run_awqserve_server(corpus: list[int], plan: dict[str, Any], model: str | None, threads: int) -> dict[str, Any]:
    srv = peers.awqserve_server(peers.free_port(), 32, model, threads, LOG_DIR)
    with srv:
        t0 = time.perf_counter()
        srv.start(plan["server_start_s"])
        out = {"start_s": time.perf_counter() - t0, "cmd": shown(srv.cmd)}
        out.update(sweep(srv, corpus, plan, plan["concurrency"], plan["single_reps"]))
    return out


def run_llama_server(corpus: list[int], plan: dict[str, Any], threads: int) -> dict[str, Any]:
    """-np 16 for concurrency ≤ 16 (and the offline workload at 16 in flight); -np 32 for 32."""
    out: dict[str, Any] = {"levels": {}, "slots": {}}
    groups = {16: [c for c in plan["concurrency"] if c <= 16], 32: [c for c in plan["concurrency"] if c > 16]}
    for slots, levels in groups.items():
        if not levels and slots != 16:
            continue
        srv = peers.llama_server(peers.free_port(), slots, 1024, threads, LOG_DIR)
        with srv:
            srv.start(plan["server_start_s"])
            out.setdefault("cmd", shown(srv.cmd))
            part = sweep(srv, corpus, plan, levels, plan["single_reps"] if slots == 16 else 0)
            out["levels"].update(part["levels"])
            out["slots"].update({str(c): slots for c in levels})
            for key in ("single_http", "prefill_http"):
                if key in part:
                    out[key] = part[key]
            if slots == 16:
                reqs = loadgen.offline_requests(corpus, plan["offline_requests"])
                off = asyncio.run(loadgen.run_level(srv.base_url, reqs, slots, plan["level_budget_s"]))
                off["mode"] = f"HTTP, {slots} in flight (= slots)"
                out["offline"] = off
    return out


def quiet_check(label: str, busy_log: dict[str, float], wait_s: float, threshold: float = 0.25) -> None:
    """Record how busy the CPUs are (other processes: nothing of ours runs now) before a phase;
    with `wait_s` > 0, first wait up to that long for them to drop under `threshold`."""
    deadline = time.monotonic() + wait_s
    busy = peers.cpu_busy()
    while busy > threshold and time.monotonic() < deadline:
        print(f"  waiting for a quieter machine: {busy:.0%} busy", flush=True)
        time.sleep(8)
        busy = peers.cpu_busy()
    busy_log[label] = round(busy, 3)
    print(f"[{time.strftime('%H:%M:%S')}] {label} (CPUs {busy:.0%} busy before start)", flush=True)


def guarded(fn: Any, *a: Any) -> dict[str, Any]:
    try:
        return fn(*a)
    except Unavailable as e:
        return {"error": str(e).splitlines()[0][:400]}
    except Exception as e:  # a broken server must not lose the other systems' numbers
        traceback.print_exc()
        return {"error": f"{type(e).__name__}: {e}"[:400]}


# ---------------------------------------------------------------- orchestration

def compare(args: argparse.Namespace) -> dict[str, Any]:
    """Run every phase for every system not skipped; failures become {"error": why} records."""
    plan = make_plan(args.quick)
    skip = {s for name in args.skip_peer for s in ALIASES.get(name, (name,))}
    try:
        server_bin: Path | None = peers.llama_server_binary()
    except Unavailable:
        server_bin = None
    meta: dict[str, Any] = {
        "date": dt.date.today().isoformat(), "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "quick": args.quick,
        "command": "python bench/run_cpu_compare.py " + " ".join(sys.argv[1:]), "threads": args.threads,
        "hardware": peers.hardware(), "versions": peers.versions(server_bin), "model": model_info(args.awq_model),
        "plan": {k: v for k, v in plan.items() if k != "requests_per_level"},
        "requests_per_level": {str(k): v for k, v in plan["requests_per_level"].items()},
        "load_avg": {"start": os.getloadavg()[0]}, "cpu_busy_before": {}, "skipped": sorted(skip)}
    res: dict[str, Any] = {"meta": meta, "inproc": {}, "servers": {}}
    busy = meta["cpu_busy_before"]
    base = ["--threads", str(args.threads)] + (["--awq-model", args.awq_model] if args.awq_model else [])

    def worker(system: str, tasks: str, lengths: list[int]) -> dict[str, Any]:
        quiet_check(f"{system} (in-process)", busy, args.wait_idle)
        argv = ["--worker", "inproc", "--system", system, "--tasks", tasks,
                "--plan", json.dumps({**plan, "lengths": lengths})] + base
        return run_worker(argv, plan["worker_timeout_s"])

    quiet_check("bandwidth", busy, args.wait_idle)
    res["bandwidth"] = run_worker(["--worker", "bandwidth"], 120)
    if "awqserve" not in skip:
        if peers.awqserve_model_dir(args.awq_model) is None:
            print("  note: the awqserve demo model is not built yet; awqserve builds it first (minutes)", flush=True)
        res["inproc"]["awqserve"] = worker("awqserve", "single,prefill,offline", plan["prefill_lengths"])
    if "llama-cpp-python" not in skip:  # offline peer here only when llama-server cannot be
        tasks = "single,prefill" + (",offline" if server_bin is None or "llama-server" in skip else "")
        res["inproc"]["llama.cpp"] = worker("llama.cpp", tasks, plan["prefill_lengths"])
    if "transformers" not in skip:
        res["inproc"]["transformers"] = worker("transformers", "single,prefill", plan["prefill_lengths_tf"])

    try:
        corpus = peers.Tokenizer(peers.demo_gguf()).encode(loadgen.corpus_text())
    except Unavailable as e:
        corpus, why = [], str(e)
    for name, run in (("awqserve", lambda: run_awqserve_server(corpus, plan, args.awq_model, args.threads)),
                      ("llama-server", lambda: run_llama_server(corpus, plan, args.threads))):
        if name in skip:
            continue
        quiet_check(f"{name} (HTTP)", busy, args.wait_idle)
        res["servers"][name] = guarded(run) if corpus else {"error": f"no prompts: {why}"}
    meta["load_avg"]["end"] = os.getloadavg()[0]
    meta["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    return res


def model_info(awq_model: str | None) -> dict[str, Any]:
    info: dict[str, Any] = {}
    try:
        gguf = peers.demo_gguf()
        info["gguf"] = {"file": gguf.name, "mib": round(gguf.stat().st_size / 2**20, 1)}
    except Unavailable as e:
        info["gguf"] = {"error": str(e)}
    d = peers.awqserve_model_dir(awq_model)
    if d is not None:
        size = sum(p.stat().st_size for p in d.glob("*.safetensors"))
        info["awqserve"] = {"dir": str(d), "mib": round(size / 2**20, 1)}
        try:
            q = json.loads((d / "config.json").read_text()).get("quantization_config") or {}
            groups = q.get("config_groups") or {}
            w = next(iter(groups.values()), {}).get("weights", {}) if groups else {}
            fmt = " ".join(x for x in (q.get("quant_method"), q.get("format")) if x)
            info["awqserve"]["quant"] = {"format": fmt, "bits": w.get("num_bits"), "group_size": w.get("group_size"),
                                         "symmetric": w.get("symmetric"), "not_quantized": q.get("ignore") or []}
        except (OSError, ValueError, AttributeError):
            pass
    else:
        info["awqserve"] = {"dir": "demo model (awqserve's default; path not recorded)"}
    return info


def main() -> int:
    ap = argparse.ArgumentParser(description="awqserve vs llama.cpp vs transformers on this CPU")
    ap.add_argument("--quick", action="store_true", help="smoke run: fewer lengths/levels/reps (~3 min on an idle machine with fast systems)")
    ap.add_argument("--skip-peer", action="append", default=[], metavar="X",
                    help=f"skip a system: {', '.join(SYSTEMS)} (llama.cpp = both llama ones); repeatable")
    ap.add_argument("--awq-model", default=None, help="awqserve model dir (default: the demo model)")
    ap.add_argument("--threads", type=int, default=2, help="threads for every system (torch intra-op, llama.cpp -t/-tb)")
    ap.add_argument("--wait-idle", type=float, default=0.0, metavar="S",
                    help="before each phase wait up to S seconds for other processes to leave the CPUs idle")
    ap.add_argument("--out-dir", default=str(peers.REPO / "docs" / "benchmarks"))
    ap.add_argument("--worker", choices=["inproc", "bandwidth"], help=argparse.SUPPRESS)
    ap.add_argument("--system", help=argparse.SUPPRESS)
    ap.add_argument("--tasks", default="", help=argparse.SUPPRESS)
    ap.add_argument("--plan", default="{}", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker_main(args)
    bad = [s for s in args.skip_peer if s not in SYSTEMS and s not in ALIASES]
    if bad:
        ap.error(f"unknown --skip-peer {bad}; choose from {', '.join(SYSTEMS + tuple(ALIASES))}")
    from report import write_report

    results = compare(args)
    paths = write_report(results, Path(args.out_dir))
    print(paths["md"].read_text())
    for p in paths.values():
        print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
