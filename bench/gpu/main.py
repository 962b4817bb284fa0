"""GPU bench driver (bench/gpu/run.sh): kernel correctness at real shapes, then the dummy 80B model.

    python -m bench.gpu.main --out DIR            # on the GPU: the issue's checks and table
    python -m bench.gpu.main --smoke --out DIR    # on a CPU (TRITON_INTERPRET=1): tiny shapes, same code

Writes DIR/gpu-<date>.md (the report; copied to docs/benchmarks/ afterwards) and DIR/gpu-<date>.json,
prints the table last, and exits 1 if any correctness check failed.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.gpu import kernel_checks as kc  # noqa: E402
from bench.gpu import model_bench as mb  # noqa: E402
from bench.gpu.common import Ceilings, decode_bytes, measure_ceilings, prefill_cost, rel_err  # noqa: E402
from bench.gpu.report import render  # noqa: E402

CONFIGS = ROOT / "tests" / "fixtures" / "configs"
FULL = dict(config=CONFIGS / "qwen3_next_80b_a3b_awq", batches=[1, 8, 64], context=1024, prefill=[2048, 8192],
            iters=10, w4_shapes={"attn qkv": (9216, 2048), "attn o_proj": (2048, 4096), "expert gate_up": (1024, 2048),
                                 "expert down": (2048, 512), "lm_head-size": (151936, 2048)},
            w4_ms=(1, 8, 64, 2048), moe=(512, 10, 2048, 512, 32), moe_tokens=(1, 64, 2048), attn=(16, 2, 256),
            attn_cases={"decode B=8": ([1] * 8, [2048] * 8), "decode B=64": ([1] * 64, [1024] * 64),
                        "prefill 2k": ([2048], [0]), "chunk 512 after 1536": ([512], [1536])},
            gdn_tokens=(1, 2048))
SMOKE = dict(config=CONFIGS / "qwen3_next_tiny_awq", batches=[1, 2], context=20, prefill=[24], iters=1,
             w4_shapes={"tiny": (72, 128)}, w4_ms=(1, 20), moe=(8, 2, 64, 32, 32), moe_tokens=(3,), attn=(4, 2, 32),
             attn_cases={"decode": ([1, 1], [9, 30]), "prefill": ([12], [5])}, gdn_tokens=())


def kernel_section(p: dict, device: torch.device, timed: bool) -> list[kc.Check]:  # type: ignore[type-arg]
    checks = kc.w4a16_checks(device, p["w4_shapes"], p["w4_ms"], ((32, True),), timed)
    first = next(iter(p["w4_shapes"].items()))
    checks += kc.w4a16_checks(device, dict([first]), (1, 64), ((64, False), (128, False), (128, True)), False)
    checks += kc.moe_checks(device, *p["moe"], p["moe_tokens"], timed)
    checks += kc.attention_checks(device, *p["attn"], p["attn_cases"], timed)
    checks += kc.gdn_checks(device, p["gdn_tokens"], timed)
    return checks


def _triton_factory(weight, device: torch.device, dtype: torch.dtype):  # type: ignore[no-untyped-def]
    """CPU smoke runs: what make_kernel picks on CUDA (Triton int4, dense float), on CPU tensors."""
    from awqserve.kernels.w4a16_kernel import TritonW4A16Kernel
    from awqserve.layers.linear import DenseKernel
    from awqserve.quant.base import QuantizedTensor

    if isinstance(weight, QuantizedTensor):
        return TritonW4A16Kernel.from_quantized(weight, device, dtype)
    return DenseKernel(weight.to(dtype))


def tiny_model_check(device: torch.device, factory) -> kc.Check:  # type: ignore[no-untyped-def]
    """The tiny Qwen3-Next on the CUDA paths (bf16) vs the exact float32 torch path, same weights."""
    from awqserve.attention.torch_backend import TorchPagedAttention
    from awqserve.kernels.cuda_paths import prepare_for_device
    from awqserve.layers.attention import Attention
    from awqserve.loader.dummy import load_dummy_model
    from awqserve.quant.kernels import KernelPolicy

    exact = load_dummy_model(SMOKE["config"], device=device, dtype=torch.float32, seed=7,
                             weight_policy=KernelPolicy("dense", dense_dtype=torch.float32))
    for layer in exact.modules():
        if isinstance(layer, Attention):
            layer.backend = TorchPagedAttention()
    fast = load_dummy_model(SMOKE["config"], device=device, dtype=torch.bfloat16, seed=7, kernel_factory=factory)
    prepare_for_device(fast, torch.device("cuda"))
    errs = []
    for model in (exact, fast):
        h = mb.Harness.build(model, device, torch.float32 if model is exact else torch.bfloat16, 2, 64)
        torch.manual_seed(0)
        ids = h.ids(40)
        errs.append(h.eager_logits(ids, h.context([30, 10], [0, 0])))
    return kc.Check("tiny Qwen3-Next: CUDA paths vs fp32 torch", "2 seqs, 40 tokens", rel_err(errs[1], errs[0]), 5e-2)


def model_section(p: dict, device: torch.device, ceil: Ceilings, factory, capture, write) -> dict:  # type: ignore[type-arg,no-untyped-def]
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    model, load_s = mb.load(str(p["config"]), device, torch.bfloat16, factory)
    inv = mb.inventory(model)
    h = mb.Harness.build(model, device, torch.bfloat16, max(p["batches"]), p["context"] + 64, max(p["prefill"]))
    t0 = time.perf_counter()
    graphs = None
    try:
        graphs = h.graphs(p["batches"], p["context"] + 64, capture)
    except Exception as e:  # noqa: BLE001 - report it, keep measuring eager
        print(f"CUDA graph capture failed: {e!r}", flush=True)
    capture_s = time.perf_counter() - t0
    decode = mb.decode_runs(h, p["batches"], p["context"], graphs, p["iters"])
    for b, row in decode.items():
        floor = ceil.floor_s(decode_bytes(inv, b, p["context"]), 2.0 * inv.active_params * b)
        row["roofline_tok_s"] = b / floor
        row["bytes"] = decode_bytes(inv, b, p["context"])
    result = {"load_s": load_s, "capture_s": capture_s, "graphs": graphs.buckets if graphs else None,
              "inventory": asdict(inv), "decode": decode, "prefill": {}, "max_memory": 0,
              "weights_bytes": mb.tensor_bytes(model)}
    write(result)  # decode numbers survive a prefill that runs out of time
    prefill = {}
    for n, ms in mb.prefill_runs(h, p["prefill"], max(1, p["iters"] // 5)).items():
        nbytes, flops = prefill_cost(inv, n)
        prefill[n] = {"ms": ms, "roofline_tok_s": n / ceil.floor_s(nbytes, flops)}
    result["prefill"] = prefill
    result["max_memory"] = torch.cuda.max_memory_allocated() if device.type == "cuda" else 0
    return result


def environment(device: torch.device) -> dict[str, str]:
    import triton

    from awqserve.layers.gdn_ops import fla_available

    env = {"torch": torch.__version__, "triton": triton.__version__, "fla": str(fla_available()),
           "python": platform.python_version(), "device": str(device)}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU (Triton interpreter)")
    ap.add_argument("--skip-model", action="store_true", help="kernel checks only")
    args = ap.parse_args(argv)
    p = SMOKE if args.smoke else FULL
    device = torch.device("cpu" if args.smoke else "cuda")
    factory = capture = None
    if args.smoke:
        sys.path.insert(0, str(ROOT / "tests" / "unit"))
        import _triton_interp  # noqa: F401  (the interpreter and its numpy work-around)

        factory, capture = _triton_factory, mb.idle_capture()
    env = environment(device)
    print(json.dumps(env), flush=True)
    ceil = Ceilings(bandwidth=3.0e12, flops=7.9e14) if args.smoke else measure_ceilings(device)
    print(f"ceilings: {ceil.bandwidth / 1e12:.2f} TB/s copy, {ceil.flops / 1e12:.0f} TFLOP/s bf16", flush=True)
    checks = kernel_section(p, device, timed=not args.smoke)
    checks.append(tiny_model_check(device, factory))
    for c in checks:
        print(f"{'PASS' if c.ok else 'FAIL'} {c.name} [{c.shape}] err={c.err:.2e}", flush=True)
    write = _writer(Path(args.out), env, ceil, checks, p)
    write(None)  # the kernel results are kept even if the model section runs out of time
    model = None if args.skip_model else model_section(p, device, ceil, factory, capture, write)
    print(write(model), flush=True)
    return 0 if all(c.ok for c in checks) else 1


def _writer(out: Path, env: dict[str, str], ceil: Ceilings, checks: list[kc.Check], p: dict):  # type: ignore[no-untyped-def,type-arg]
    """A function writing gpu-<date>.md/.json for the model results so far; returns the markdown."""
    date = dt.date.today().isoformat()
    out.mkdir(parents=True, exist_ok=True)

    def write(model: dict | None) -> str:  # type: ignore[type-arg]
        text = render(env, ceil, checks, model, p["context"], str(p["config"].name), date)
        (out / f"gpu-{date}.md").write_text(text)
        (out / f"gpu-{date}.json").write_text(json.dumps({"env": env, "checks": [asdict(c) for c in checks],
                                                          "model": model}, indent=1, default=str))
        return text

    return write


if __name__ == "__main__":
    sys.exit(main())
