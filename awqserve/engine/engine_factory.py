"""Engine construction: device, dtype, model and tokenizer, context length, caches, scheduler, processors.

`build_engine(config)` is the only place that turns an `EngineConfig` into running parts; `LLMEngine`
receives them assembled (`EngineParts`) and only runs the step loop. It moves a `LoadProgress`
through the start-up phases it runs (building_demo_model only when the demo model is not cached yet,
loading_weights, allocating_cache, compiling only for the compiled CPU decode step, then ready; or
failed), handing each callee the progress callback of its own phase.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch

from awqserve.compile.compiled_decode import torch_supported
from awqserve.config.engine_config import EngineConfig
from awqserve.config.model_config import ModelConfig, parse_dtype
from awqserve.engine.block_manager import BlockManager
from awqserve.engine.detokenizer import Detokenizer
from awqserve.engine.input_processor import InputProcessor
from awqserve.engine.llm_engine import EngineParts, LLMEngine
from awqserve.engine.model_runner import ModelRunner
from awqserve.engine.output_processor import OutputProcessor
from awqserve.engine.progress import LoadProgress
from awqserve.engine.progress_render import log_progress
from awqserve.engine.protocol import EngineInfo
from awqserve.engine.sampler import Sampler
from awqserve.engine.scheduler import Scheduler
from awqserve.engine.state_pool import StatePool
from awqserve.engine.stats import StatsHolder
from awqserve.engine.structured_output import StructuredOutputManager
from awqserve.errors import UnsupportedError
from awqserve.loader.load_model import load_model
from awqserve.loader.tokenizer import load_tokenizer
from awqserve.models.base import CausalLM
from awqserve.quant.kernels import KernelPolicy, cpu_has_native_bf16
from awqserve.tools.demo_model import DEMO_SERVED_NAME, demo_model_built, ensure_demo_model

log = logging.getLogger(__name__)
DEFAULT_MAX_MODEL_LEN_CAP = 8192


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def resolve_dtype(name: str, device: torch.device, *, quantized: bool = False, dense_layout: bool = False) -> torch.dtype:
    """Activation dtype. auto: bf16 on CUDA; on CPU bf16 for int4 checkpoints where the CPU multiplies
    bf16 natively (the int4 kernel takes bf16 activations, so fp32 would add two casts per linear:
    measured 17.7 vs 27 ms per demo decode step), else fp32. The dense layout keeps the exact fp32
    reference path."""
    if name != "auto":
        return parse_dtype(name)
    if device.type == "cuda":
        return torch.bfloat16
    if quantized and not dense_layout and cpu_has_native_bf16():
        return torch.bfloat16
    return torch.float32


def resolve_max_model_len(config: EngineConfig, model_config: ModelConfig) -> int:
    """Default: the model's own limit capped at 8192. An explicit value above the model's limit is
    refused (as vLLM does): positions past it were never trained and RoPE tables end there."""
    limit = model_config.max_position_embeddings
    wanted = config.max_model_len
    if wanted is None:
        return min(limit, DEFAULT_MAX_MODEL_LEN_CAP)
    if wanted > limit:
        raise UnsupportedError(f"--max-model-len {wanted} exceeds the model's own limit "
                               f"(max_position_embeddings = {limit}); use at most {limit}")
    return wanted


def _model_dir(config: EngineConfig, progress: LoadProgress) -> Path:
    if config.model is not None:
        return Path(config.model).expanduser()
    if not demo_model_built():
        progress.begin("building_demo_model", unit="steps", detail="opening the GGUF")
    return ensure_demo_model(progress=progress.reporter())


def _load(config: EngineConfig, device: torch.device, progress: LoadProgress) -> tuple[CausalLM, Any, torch.dtype]:
    model_dir = _model_dir(config, progress)
    progress.begin("loading_weights", unit="bytes", detail="reading headers")
    t0 = time.monotonic()
    quantized = bool(ModelConfig.from_dir(model_dir).quantization_config)
    dtype = resolve_dtype(config.dtype, device, quantized=quantized, dense_layout=config.weight_layout == "dense")
    # An explicit --dtype is honoured by every kernel (no bf16 shortcut inside int4/dense kernels).
    compute = parse_dtype(config.dtype) if config.dtype != "auto" else None
    policy = KernelPolicy(config.weight_layout, lm_head=config.lm_head_precision, compute_dtype=compute)
    if config.load_format == "dummy":
        from awqserve.loader.dummy import load_dummy_model

        model = load_dummy_model(model_dir, device=device, dtype=dtype, weight_policy=policy, seed=config.seed)
    else:
        model = load_model(model_dir, device=device, dtype=dtype, weight_policy=policy, progress=progress.reporter())
    log.info("loaded %s on %s (%s) in %.1fs", model_dir, device, dtype, time.monotonic() - t0)
    return model, load_tokenizer(model_dir), dtype


def _scheduler(config: EngineConfig, runner: ModelRunner) -> Scheduler:
    hybrid = runner.spec.is_hybrid
    prefix = config.enable_prefix_caching
    if prefix is None:
        prefix = not hybrid
    elif prefix and hybrid:
        log.warning("prefix caching is not supported for hybrid (recurrent-state) models; disabled")
        prefix = False
    bm = BlockManager(runner.num_blocks, config.block_size, prefix)
    pool = StatePool(runner.num_state_slots) if hybrid else None
    return Scheduler(max_num_seqs=config.max_num_seqs, max_num_batched_tokens=config.max_num_batched_tokens,
                     block_manager=bm, state_pool=pool)


def _eos_ids(model_config: ModelConfig, tokenizer: Any) -> tuple[int, ...]:
    ids = set(model_config.eos_token_ids)
    tok_eos = getattr(tokenizer, "eos_token_id", None)
    if isinstance(tok_eos, int):
        ids.add(tok_eos)
    return tuple(sorted(ids))


def _model_name(config: EngineConfig) -> str:
    return config.served_model_name or config.model or DEMO_SERVED_NAME


def _maybe_compile(config: EngineConfig, runner: ModelRunner, model: CausalLM, device: torch.device,
                   max_model_len: int, progress: LoadProgress) -> None:
    if config.enforce_eager:
        return
    if device.type == "cuda":  # decode CUDA graphs at bucketed batch sizes (compile/cuda_graphs.py)
        runner.enable_cuda_graphs(config.max_num_seqs, max_model_len)
        return
    if device.type != "cpu" or not model.compilable_decode:
        return
    if not torch_supported():
        log.warning("the compiled decode step is tested on torch 2.13 only (found %s); serving eager",
                    torch.__version__)
        return
    progress.begin("compiling", unit="graphs")
    runner.enable_compiled_decode(config.max_num_seqs, max_model_len, progress=progress.reporter())


def build_engine(config: EngineConfig, *, stats: StatsHolder | None = None, model: CausalLM | None = None,
                 tokenizer: Any = None, progress: LoadProgress | None = None) -> LLMEngine:
    """Load (unless `model` and `tokenizer` are given: tests) and assemble an engine.

    `progress` (default: one reporting through logging) ends "ready", or "failed" if this raises."""
    progress = progress or log_progress()
    try:
        engine = _assemble(config, stats or StatsHolder(), model, tokenizer, progress)
    except BaseException as e:
        progress.fail(f"{type(e).__name__}: {e}")
        raise
    progress.ready()
    return engine


def _assemble(config: EngineConfig, stats: StatsHolder, model: CausalLM | None, tokenizer: Any,
              progress: LoadProgress) -> LLMEngine:
    device = resolve_device(config.device)
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    torch.manual_seed(config.seed)
    if model is None:
        model, tokenizer, dtype = _load(config, device, progress)
    else:
        dtype = resolve_dtype(config.dtype, device)
    progress.begin("allocating_cache")
    mc = model.config
    max_len = resolve_max_model_len(config, mc)
    eos = _eos_ids(mc, tokenizer)
    structured = StructuredOutputManager(tokenizer, mc.vocab_size, eos)
    runner = ModelRunner(model, config=config, device=device, dtype=dtype, max_model_len=max_len,
                         sampler=Sampler(structured))
    _maybe_compile(config, runner, model, device, max_len, progress)
    scheduler = _scheduler(config, runner)
    info = EngineInfo(model_name=_model_name(config), model_path=mc.path, max_model_len=max_len,
                      vocab_size=mc.vocab_size, max_logprobs=config.max_logprobs, eos_token_ids=eos,
                      generation_defaults=dict(mc.generation), quant_info=model.quant_info)
    inputs = InputProcessor(max_model_len=max_len, vocab_size=mc.vocab_size, max_logprobs=config.max_logprobs,
                            eos_token_ids=eos)
    outputs = OutputProcessor(Detokenizer(tokenizer), scheduler, stats)
    plan = runner.plan
    stats.update(num_kv_blocks=plan.num_blocks, block_size=config.block_size, kv_cache_bytes=plan.kv_bytes,
                 state_cache_bytes=plan.state_bytes, num_state_slots=plan.num_state_slots)
    return LLMEngine(EngineParts(config=config, info=info, model=model, tokenizer=tokenizer, runner=runner,
                                 scheduler=scheduler, inputs=inputs, outputs=outputs, structured=structured,
                                 stats=stats, device=device))
