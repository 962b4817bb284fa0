"""Markdown table + PNG plots from one run's results (the dict run_cpu_compare.py builds).

Every ratio is awqserve ÷ a peer measured in the same run. A system that did not run shows "n/a"
and its reason is listed under "Not measured".

    python bench/report.py docs/benchmarks/cpu-2026-11-26.json   # re-render an earlier run
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

TARGETS = [  # (label, awqserve path, peer path, peer label, goal, higher is better)
    ("TTFT, short chat prompt (HTTP, prefix cached)", ("servers", "awqserve", "single_http", "ttft_ms"),
     ("servers", "llama-server", "single_http", "ttft_ms"), "llama-server", 1.0, False),
    ("TTFT, 512-token fresh prompt (HTTP)", ("servers", "awqserve", "prefill_http", "512", "ttft_ms"),
     ("servers", "llama-server", "prefill_http", "512", "ttft_ms"), "llama-server", 0.5, False),
    ("single-stream decode tok/s (HTTP)", ("servers", "awqserve", "single_http", "decode_tok_s"),
     ("servers", "llama-server", "single_http", "decode_tok_s"), "llama-server", 1.5, True),
    ("aggregate output tok/s, 16 streams (HTTP)", ("servers", "awqserve", "levels", "16", "output_tok_s"),
     ("servers", "llama-server", "levels", "16", "output_tok_s"), "llama-server", 3.0, True),
    ("single-stream decode tok/s", ("inproc", "awqserve", "single", "decode_tok_s"),
     ("inproc", "llama.cpp", "single", "decode_tok_s"), "llama.cpp (llama-cpp-python)", 1.0, True),
    ("aggregate output tok/s, 16 streams", ("servers", "awqserve", "levels", "16", "output_tok_s"),
     ("servers", "llama-server", "levels", "16", "output_tok_s"), "llama-server", 1.5, True),
    ("TTFT, 2048-token prompt", ("inproc", "awqserve", "prefill", "2048", "ttft_ms"),
     ("inproc", "llama.cpp", "prefill", "2048", "ttft_ms"), "llama.cpp (llama-cpp-python)", 1.0, False),
    ("single-stream decode tok/s", ("inproc", "awqserve", "single", "decode_tok_s"),
     ("inproc", "transformers", "single", "decode_tok_s"), "transformers", 10.0, True),
]


def get(d: Any, *path: str) -> Any:
    """Nested lookup; None if any step is missing or the entry is an error record."""
    for key in path:
        if not isinstance(d, dict) or key not in d or (isinstance(d[key], dict) and "error" in d[key]):
            return None
        d = d[key]
    return d


def fmt(x: Any, digits: int = 1) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:,.{digits}f}" if isinstance(x, (int, float)) else str(x)


def ratio(a: Any, b: Any) -> float | None:
    return a / b if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b > 0 else None


def errors(res: dict[str, Any]) -> list[str]:
    """Every {"error": ...} record in the results, as 'path: reason'."""
    out: list[str] = []

    def walk(d: Any, path: list[str]) -> None:
        if isinstance(d, dict):
            if "error" in d and isinstance(d["error"], str):
                out.append(f"{' / '.join(path)}: {d['error']}")
                return
            if d.get("errors"):  # a load level with failed requests
                spent = ", time budget spent" if d.get("budget_spent") else ""
                out.append(f"{' / '.join(path)}: {d['errors']} of {d['requests']} requests failed{spent}; "
                           f"e.g. {'; '.join(d.get('error_samples', []))}")
            for k, v in d.items():
                walk(v, path + [k])
    walk({k: v for k, v in res.items() if k != "meta"}, [])
    return out


def setup_section(res: dict[str, Any]) -> list[str]:
    m = res["meta"]
    hw, v, model = m["hardware"], m["versions"], m["model"]
    load = m.get("load_avg", {})
    cpus = hw.get("cpus", "?")
    before = m.get("cpu_busy_before", {})
    busy = any(isinstance(x, float) and x > 0.3 for x in before.values())
    awq = model.get("awqserve", {})
    q = awq.get("quant", {})
    qtext = (f"int{q.get('bits')} AWQ ({q.get('format')}, group {q.get('group_size')}, "
             f"{'sym' if q.get('symmetric') else 'asym'}"
             + (f"; not quantized in the checkpoint: {', '.join(q['not_quantized'])}" if q.get("not_quantized") else "")
             + "; served with the default `--lm-head-precision auto`: an int8 per-row lm_head copy for "
               "≤ 4 rows, bf16 above; decode step compiled)"
             if q else "int4 AWQ (compressed-tensors)")
    bw = get(res, "bandwidth", "gb_s")
    rows = [
        ("Date", f"{m['date']} ({m['started']} → {m.get('finished', '?')})" + (", **quick smoke run**" if m["quick"] else "")),
        ("Command", f"`{m['command'].strip()}`"),
        ("Hardware", f"{hw.get('cpu_model')} — {cpus} CPUs ({hw.get('cores_per_socket')} cores/socket, "
                     f"{hw.get('threads_per_core')} thread/core), {hw.get('simd', '')}, {hw.get('memory_gib', '?')} GiB RAM"
                     + (f", {hw['hypervisor']} VM" if hw.get("hypervisor") else "")),
        ("Memory bandwidth", f"{fmt(bw)} GB/s (this run: torch copy of {get(res, 'bandwidth', 'buffer_mib')} MiB, "
                             "read + write bytes / best time)" if bw else "n/a"),
        ("Other load", "CPUs busy just before each phase (nothing of ours running): "
         + ", ".join(f"{k} {x:.0%}" for k, x in before.items()) + "; load average "
         + ", ".join(f"{k} {x:.1f}" for k, x in load.items())
         + (" — **other processes shared the CPUs: absolute numbers are depressed and noisy; "
            "ratios are only fair where both sides saw similar load**" if busy else "")),
        ("Model", f"SmolLM2-135M-Instruct (Llama, 30 layers, hidden 576): awqserve `{awq.get('dir')}` "
                  f"({awq.get('mib', '?')} MiB); llama.cpp `{get(model, 'gguf', 'file')}` ({get(model, 'gguf', 'mib')} MiB)"),
        ("Precision", f"awqserve: {qtext} weights, bf16 activations where the CPU has native bf16 (else fp32) · llama.cpp: GGUF Q4_1 · "
                      "transformers: fp32 weights dequantized from the same GGUF"),
        ("Threads", f"{m['threads']} for every system (llama.cpp `-t`/`-tb`, awqserve `--num-threads`, "
                    "transformers `torch.set_num_threads`)"),
        ("Versions", ", ".join(f"{k} {val}" for k, val in v.items())),
    ]
    return ["| | |", "|---|---|"] + [f"| {a} | {b} |" for a, b in rows]


def targets_section(res: dict[str, Any]) -> list[str]:
    lines = ["| target | awqserve | peer (same run) | awqserve ÷ peer | goal | met |", "|---|---|---|---|---|---|"]
    for label, a_path, p_path, peer, goal, higher in TARGETS:
        a, p = get(res, *a_path), get(res, *p_path)
        r = ratio(a, p)
        met = "n/a" if r is None else ("yes" if (r >= goal if higher else r <= goal) else "**no**")
        unit = "ms" if "TTFT" in label else "tok/s"
        lines.append(f"| {label} | {fmt(a)} {unit} | {peer}: {fmt(p)} {unit} | {fmt(r, 2)}× | "
                     f"{'≥' if higher else '≤'} {goal:g}× | {met} |")
    return lines


def single_section(res: dict[str, Any]) -> list[str]:
    rows = [("awqserve", "offline `LLM.generate`", get(res, "inproc", "awqserve", "single")),
            ("awqserve", "HTTP chat stream", get(res, "servers", "awqserve", "single_http")),
            ("llama.cpp", "llama-cpp-python `Llama.generate`", get(res, "inproc", "llama.cpp", "single")),
            ("llama.cpp", "llama-server HTTP chat stream", get(res, "servers", "llama-server", "single_http")),
            ("transformers", f"`generate`, fp32 ({get(res, 'inproc', 'transformers', 'loader') or 'GGUF loader'})",
             get(res, "inproc", "transformers", "single"))]
    ours = get(res, "inproc", "awqserve", "single", "decode_tok_s")
    n_prompt = get(res, "inproc", "llama.cpp", "single", "prompt_tokens") or get(res, "inproc", "awqserve", "single", "prompt_tokens")
    lines = [f"Chat prompt of {fmt(n_prompt, 0)} tokens (model's template), 128 new tokens, greedy, EOS ignored. "
             "Decode tok/s = tokens after the first ÷ time after the first.", "",
             "| system | interface | decode tok/s | TTFT ms | awqserve offline ÷ this |", "|---|---|---|---|---|"]
    for name, how, d in rows:
        d = d or {}
        lines.append(f"| {name} | {how} | {fmt(d.get('decode_tok_s'))} | {fmt(d.get('ttft_ms'))} | "
                     f"{fmt(ratio(ours, d.get('decode_tok_s')), 2)}× |")
    return lines


def prefill_section(res: dict[str, Any]) -> list[str]:
    systems = ["awqserve", "llama.cpp", "transformers"]
    lengths = sorted({int(k) for s in systems for k in (get(res, "inproc", s, "prefill") or {})})
    head = "| prompt tokens | " + " | ".join(f"{s} TTFT ms | {s} tok/s" for s in systems) + " | TTFT awqserve ÷ llama.cpp |"
    lines = ["One output token; each prompt a fresh window (no prefix-cache reuse). The context limit (8192) "
             "is measured with 8190 prompt tokens.", "", head, "|" + "---|" * (2 * len(systems) + 2)]
    for n in lengths:
        cells = []
        for s in systems:
            d = get(res, "inproc", s, "prefill", str(n)) or {}
            cells += [fmt(d.get("ttft_ms")), fmt(d.get("prefill_tok_s"))]
        r = ratio(get(res, "inproc", "awqserve", "prefill", str(n), "ttft_ms"),
                  get(res, "inproc", "llama.cpp", "prefill", str(n), "ttft_ms"))
        lines.append(f"| {n} | " + " | ".join(cells) + f" | {fmt(r, 2)}× |")
    return lines if lengths else lines[:1] + ["", "n/a (no system measured prefill)"]


def serving_section(res: dict[str, Any]) -> list[str]:
    m = res["meta"]
    lines = [f"Streaming `/v1/completions`, prompts 128–512 tokens (seeded), 128 output tokens, `ignore_eos`, "
             f"greedy; one load generator (bench/loadgen.py, httpx) for both servers; requests per level "
             f"{m.get('requests_per_level')}. ITL = gap between streamed token chunks.", "",
             "| server | concurrency | requests | errors | output tok/s | TTFT p50 / p99 ms | ITL p50 / p99 ms | "
             "per-stream tok/s | awqserve ÷ llama-server (tok/s) |", "|---|---|---|---|---|---|---|---|---|"]
    slots = get(res, "servers", "llama-server", "slots") or {}
    for server in ("awqserve", "llama-server"):
        levels = get(res, "servers", server, "levels") or {}
        for c, d in sorted(levels.items(), key=lambda kv: int(kv[0])):
            r = ratio(get(res, "servers", "awqserve", "levels", c, "output_tok_s"),
                      get(res, "servers", "llama-server", "levels", c, "output_tok_s"))
            name = server + (f" (-np {slots[c]})" if server == "llama-server" and c in slots else "")
            errs = f"{d['errors']}" + (" (budget spent)" if d.get("budget_spent") else "")
            lines.append(f"| {name} | {c} | {d['requests']} | {errs} | {fmt(d['output_tok_s'])} | "
                         f"{fmt(d['ttft_p50_ms'], 0)} / {fmt(d['ttft_p99_ms'], 0)} | {fmt(d['itl_p50_ms'])} / "
                         f"{fmt(d['itl_p99_ms'])} | {fmt(d['per_stream_tok_s'])} | "
                         f"{fmt(r, 2) + '×' if server == 'awqserve' else ''} |")
    cmds = [f"`{get(res, 'servers', server, 'cmd')}`" for server in ("awqserve", "llama-server")
            if get(res, "servers", server, "cmd")]
    return lines + (["", "Server commands: " + "; ".join(cmds)] if cmds else [])


def offline_section(res: dict[str, Any]) -> list[str]:
    rows = [("awqserve", get(res, "inproc", "awqserve", "offline")),
            ("llama-server", get(res, "servers", "llama-server", "offline")),
            ("llama-cpp-python", get(res, "inproc", "llama.cpp", "offline"))]
    ours = get(res, "inproc", "awqserve", "offline", "output_tok_s")
    n = res["meta"]["plan"].get("offline_requests")
    lines = [f"nano-vllm's workload scaled to the box: {n} requests, input 64–256 and output 64–256 tokens "
             "(seeded, EOS ignored); total output tokens ÷ wall time.", "",
             "| system | mode | requests | input / output tokens | wall s | output tok/s | awqserve ÷ this |",
             "|---|---|---|---|---|---|---|"]
    for name, d in rows:
        if d is None and name == "llama-cpp-python":
            continue  # only measured when llama-server is unavailable
        d = d or {}
        lines.append(f"| {name} | {d.get('mode', 'n/a')} | {d.get('requests', 'n/a')} | "
                     f"{d.get('input_tokens', 'n/a')} / {d.get('output_tokens', 'n/a')} | {fmt(d.get('wall_s'))} | "
                     f"{fmt(d.get('output_tok_s'))} | {fmt(ratio(ours, d.get('output_tok_s')), 2)}× |")
    return lines


def roofline_section(res: dict[str, Any]) -> list[str]:
    bw = get(res, "bandwidth", "gb_s")
    model = res["meta"]["model"]
    lines = []
    for name, mib in (("llama.cpp (GGUF Q4_1)", get(model, "gguf", "mib")), ("awqserve (checkpoint)", get(model, "awqserve", "mib"))):
        if bw and mib:
            lines.append(f"- {name}: {mib} MiB of weights read per token → ≤ {bw * 1e9 / (mib * 2**20):,.0f} tok/s "
                         f"at {bw:.1f} GB/s (batch-1 decode bound if every weight byte comes from DRAM once per token)")
    return lines or ["n/a"]


def plots(res: dict[str, Any], stem: Path) -> list[Path]:
    """throughput vs concurrency and latency (TTFT / ITL p50, p99) vs concurrency, per server."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = {s: get(res, "servers", s, "levels") or {} for s in ("awqserve", "llama-server")}
    series = {s: dict(sorted(((int(c), d) for c, d in v.items()))) for s, v in series.items() if v}
    if not series:
        return []
    title = f"{res['meta']['hardware'].get('cpu_model')}, {res['meta']['date']}" + (" (quick)" if res["meta"]["quick"] else "")
    ticks = sorted({c for lv in series.values() for c in lv})

    def concurrency_axis(ax: Any) -> None:
        ax.set_xscale("log", base=2)
        ax.set_xticks(ticks, [str(c) for c in ticks])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_xlabel("concurrent streams")
        ax.grid(alpha=0.3)

    fig, ax = plt.subplots(figsize=(6, 4))
    for s, lv in series.items():
        ax.plot(list(lv), [_num(d["output_tok_s"]) for d in lv.values()], marker="o", label=s)
    ax.set(ylabel="aggregate output tok/s", title=f"Throughput — {title}")
    ax.set_ylim(bottom=0)
    concurrency_axis(ax)
    ax.legend()
    out = [stem.with_name(stem.name + "-throughput.png")]
    fig.tight_layout()
    fig.savefig(out[0], dpi=110)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, label in ((axes[0], "ttft", "TTFT ms"), (axes[1], "itl", "inter-token latency ms")):
        for s, lv in series.items():
            for q, style in (("p50", "-o"), ("p99", "--x")):
                ax.plot(list(lv), [_num(d[f"{key}_{q}_ms"]) for d in lv.values()], style, label=f"{s} {q}")
        ax.set(yscale="log", ylabel=label)
        concurrency_axis(ax)
        ax.legend(fontsize=8)
    fig.suptitle(f"Latency — {title}")
    fig.tight_layout()
    out.append(stem.with_name(stem.name + "-latency.png"))
    fig.savefig(out[1], dpi=110)
    plt.close("all")
    return out


def render(res: dict[str, Any], images: list[Path]) -> str:
    m = res["meta"]
    parts = [f"# CPU comparison: awqserve vs llama.cpp vs transformers — {m['date']}" + (" (quick)" if m["quick"] else ""),
             "", *setup_section(res), "", "## Targets (ratios from this run)", "", *targets_section(res),
             "", "## 1. Single stream", "", *single_section(res), "", "## 2. Prefill", "", *prefill_section(res),
             "", "## 3. Serving sweep (HTTP)", "", *serving_section(res), "", "## 4. Offline throughput", "",
             *offline_section(res), "", "## Decode roofline (measured bandwidth)", "", *roofline_section(res), ""]
    if images:
        parts += ["## Plots", ""] + [f"![{p.stem}]({p.name})" for p in images] + [""]
    errs = errors(res)
    parts += ["## Not measured", ""] + ([f"- {e}" for e in errs] if errs else ["No failures."])
    if m.get("skipped"):
        parts.append(f"- skipped on request: {', '.join(m['skipped'])}")
    return "\n".join(parts) + "\n"


def _strict(x: Any) -> Any:
    """NaN → None, so the JSON file is standard JSON."""
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, dict):
        return {k: _strict(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_strict(v) for v in x]
    return x


def _num(x: Any) -> float:
    return float(x) if isinstance(x, (int, float)) else math.nan


def write_report(res: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """Write <out_dir>/cpu-<date>[-quick].{json,md} and the PNGs; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / (f"cpu-{res['meta']['date']}" + ("-quick" if res["meta"]["quick"] else ""))
    paths = {"json": stem.with_suffix(".json")}
    paths["json"].write_text(json.dumps(_strict(res), indent=1, default=str) + "\n")
    try:
        images = plots(res, stem)
    except Exception as e:  # no matplotlib must not cost the table
        images = []
        res.setdefault("plots", {"error": f"{type(e).__name__}: {e}"})
    for i, p in enumerate(images):
        paths[f"png{i}"] = p
    paths["md"] = stem.with_suffix(".md")
    paths["md"].write_text(render(res, images))
    return paths


if __name__ == "__main__":
    data = json.loads(Path(sys.argv[1]).read_text())
    for p in write_report(data, Path(sys.argv[1]).parent).values():
        print(f"wrote {p}")
