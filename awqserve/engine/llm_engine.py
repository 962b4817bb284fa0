"""LLMEngine: the synchronous engine loop (add_request / step / abort), owned by one thread.

step() = Scheduler.schedule() → ModelRunner.execute() → Scheduler.update_from_output() →
Detokenizer (stop checks) → one RequestOutput per API request that changed. An exception inside a
step fails only the requests of that step (their outputs carry `error`); the engine goes on.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from awqserve.config.engine_config import EngineConfig
from awqserve.config.model_config import ModelConfig, parse_dtype
from awqserve.errors import UnsupportedError
from awqserve.engine.block_manager import BlockManager
from awqserve.engine.detokenizer import Detokenizer
from awqserve.engine.model_runner import ModelRunner
from awqserve.engine.outputs import CompletionOutput, RequestMetrics, RequestOutput
from awqserve.engine.request import Request, RequestStatus
from awqserve.engine.sampling_params import SamplingParams
from awqserve.engine.scheduler import ModelRunnerOutput, SchedulerOutput, Scheduler
from awqserve.engine.state_pool import StatePool
from awqserve.engine.stats import StatsHolder
from awqserve.errors import RequestError
from awqserve.models.base import CausalLM

log = logging.getLogger(__name__)
DEFAULT_MAX_MODEL_LEN_CAP = 8192
KV_USAGE_WARN = 0.9  # warn once when KV usage crosses this (re-armed below KV_USAGE_REARM)
KV_USAGE_REARM = 0.75


@dataclass
class _Group:
    """One API request: its n samples and what has already been delivered for each."""

    request_id: str
    prompt_token_ids: list[int]
    children: list[Request]
    metrics: RequestMetrics
    sent_tokens: list[int] = field(default_factory=list)
    sent_logprobs: list[int] = field(default_factory=list)
    error: Exception | None = None

    @property
    def finished(self) -> bool:
        return all(c.is_finished for c in self.children)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def resolve_dtype(name: str, device: torch.device, *, quantized: bool = False,
                  weight_layout: str = "auto") -> torch.dtype:
    """Activation dtype. auto: bf16 on CUDA; on CPU bf16 for int4 checkpoints where the CPU multiplies
    bf16 natively (the int4 kernel takes bf16 activations, so fp32 would add two casts per linear:
    measured 17.7 vs 27 ms per demo decode step), else fp32. `--weight-layout dense` keeps the exact
    fp32 reference path."""
    if name != "auto":
        return parse_dtype(name)
    if device.type == "cuda":
        return torch.bfloat16
    from awqserve.quant.kernels import cpu_has_native_bf16

    if quantized and weight_layout != "dense" and cpu_has_native_bf16():
        return torch.bfloat16
    return torch.float32


class LLMEngine:
    """Loads the model (or takes one, for tests) and serves requests step by step. Not thread-safe:
    every method must be called from the thread that owns the engine."""

    def __init__(self, config: EngineConfig, *, stats: StatsHolder | None = None, model: CausalLM | None = None,
                 tokenizer: Any = None) -> None:
        self.config = config
        self.stats = stats or StatsHolder()
        self.device = resolve_device(config.device)
        self.dtype = resolve_dtype(config.dtype, self.device)
        if config.num_threads:
            torch.set_num_threads(config.num_threads)
        torch.manual_seed(config.seed)
        if model is None:
            model, tokenizer = self._load(tokenizer)
        self.model = model
        self.model_config: ModelConfig = model.config
        self.tokenizer = tokenizer
        self.max_model_len = self._resolve_max_model_len()
        self.runner = ModelRunner(model, config=config, device=self.device, dtype=self.dtype,
                                  max_model_len=self.max_model_len)
        if not config.enforce_eager and self.device.type == "cpu" and model.compilable_decode:
            self.runner.enable_compiled_decode(config.max_num_seqs, self.max_model_len)
        self.scheduler = self._build_scheduler()
        self.detokenizer = Detokenizer(tokenizer)
        self.eos_token_ids = self._eos_ids()
        self.vocab_size = self.model_config.vocab_size
        self._groups: dict[str, _Group] = {}
        self._aborted: list[_Group] = []
        self._counters = (0, 0, 0)  # preemptions, prefix queries, prefix hits already reported
        self._kv_warned = False
        self._publish_stats()

    # -- construction ----------------------------------------------------------------------------
    def _resolve_max_model_len(self) -> int:
        """Default: the model's own limit capped at 8192. An explicit value above the model's limit
        is refused (as vLLM does): positions past it were never trained and RoPE tables end there."""
        limit = self.model_config.max_position_embeddings
        wanted = self.config.max_model_len
        if wanted is None:
            return min(limit, DEFAULT_MAX_MODEL_LEN_CAP)
        if wanted > limit:
            raise UnsupportedError(f"--max-model-len {wanted} exceeds the model's own limit "
                                   f"(max_position_embeddings = {limit}); use at most {limit}")
        return wanted

    def _load(self, tokenizer: Any) -> tuple[CausalLM, Any]:
        from awqserve.loader.load_model import load_model
        from awqserve.loader.tokenizer import load_tokenizer
        from awqserve.quant.kernels import KernelPolicy

        if self.config.model is not None:
            model_dir = Path(self.config.model).expanduser()
        else:
            from awqserve.tools.demo_model import ensure_demo_model

            model_dir = ensure_demo_model()
        t0 = time.monotonic()
        quantized = bool(ModelConfig.from_dir(model_dir).quantization_config)
        self.dtype = resolve_dtype(self.config.dtype, self.device, quantized=quantized,
                                   weight_layout=self.config.weight_layout)
        policy = KernelPolicy(self.config.weight_layout, lm_head=self.config.lm_head_precision)
        model = load_model(model_dir, device=self.device, dtype=self.dtype, weight_policy=policy)
        log.info("loaded %s on %s (%s) in %.1fs", model_dir, self.device, self.dtype, time.monotonic() - t0)
        return model, tokenizer if tokenizer is not None else load_tokenizer(model_dir)

    def _build_scheduler(self) -> Scheduler:
        hybrid = self.runner.spec.is_hybrid
        prefix = self.config.enable_prefix_caching
        if prefix is None:
            prefix = not hybrid
        elif prefix and hybrid:
            log.warning("prefix caching is not supported for hybrid (recurrent-state) models; disabled")
            prefix = False
        self.enable_prefix_caching = prefix
        bm = BlockManager(self.runner.num_blocks, self.config.block_size, prefix)
        pool = StatePool(self.runner.num_state_slots) if hybrid else None
        return Scheduler(max_num_seqs=self.config.max_num_seqs,
                         max_num_batched_tokens=self.config.max_num_batched_tokens, block_manager=bm,
                         state_pool=pool)

    def _eos_ids(self) -> tuple[int, ...]:
        ids = set(self.model_config.eos_token_ids)
        tok_eos = getattr(self.tokenizer, "eos_token_id", None)
        if isinstance(tok_eos, int):
            ids.add(tok_eos)
        return tuple(sorted(ids))

    @property
    def quant_info(self) -> Any:
        return getattr(self.model, "quant_info", None)

    # -- requests --------------------------------------------------------------------------------
    def add_request(self, request_id: str, prompt_token_ids: list[int], params: SamplingParams,
                    arrival_time: float | None = None) -> None:
        """Queue a request. Raises ValueError for a duplicate id or a prompt the engine cannot serve."""
        self._validate(request_id, prompt_token_ids, params)
        room = self.max_model_len - len(prompt_token_ids)
        max_tokens = room if params.max_tokens is None else min(params.max_tokens, room)
        metrics = RequestMetrics(arrival_time=time.monotonic() if arrival_time is None else arrival_time)
        children: list[Request] = []
        for i in range(params.n):
            child = Request(request_id if params.n == 1 else f"{request_id}#{i}", prompt_token_ids, params,
                            max_tokens=max_tokens, eos_token_ids=self.eos_token_ids, group_id=request_id,
                            index=i, fork_of=children[0] if children else None, metrics=metrics)
            if i > 0:
                child.prompt_logprobs = None  # reported once, from sample 0
            child.detok = self.detokenizer.new_state(prompt_token_ids)
            children.append(child)
        group = _Group(request_id, list(prompt_token_ids), children, metrics, [0] * params.n, [0] * params.n)
        self._groups[request_id] = group
        for child in children:
            self.scheduler.add_request(child)

    def _validate(self, request_id: str, prompt: list[int], params: SamplingParams) -> None:
        if request_id in self._groups:
            raise ValueError(f"request id {request_id!r} is already in use")
        if not prompt:
            raise ValueError("the prompt must contain at least one token")
        if len(prompt) >= self.max_model_len:
            raise ValueError(f"the prompt has {len(prompt)} tokens; max_model_len is {self.max_model_len}, "
                             f"which leaves no room to generate")
        if min(prompt) < 0 or max(prompt) >= self.vocab_size:
            raise ValueError(f"prompt token ids must be in [0, {self.vocab_size})")
        for name in ("logprobs", "prompt_logprobs"):
            k = getattr(params, name)
            if k is not None and k > self.config.max_logprobs:
                raise ValueError(f"{name}={k} exceeds the maximum of {self.config.max_logprobs}")

    def abort(self, request_id: str) -> bool:
        """Stop a request now: its blocks and state slot are freed immediately and the next step()
        returns its final output (finish_reason "abort"). False if unknown or already finished."""
        group = self._groups.get(request_id)
        if group is None or group.finished:
            return False
        for child in group.children:
            self.scheduler.finish(child, RequestStatus.FINISHED_ABORTED)
        self._aborted.append(group)
        return True

    def has_unfinished(self) -> bool:
        return self.scheduler.has_unfinished() or bool(self._aborted)

    @property
    def num_waiting(self) -> int:
        return len(self.scheduler.waiting)

    @property
    def num_running(self) -> int:
        return len(self.scheduler.running)

    # -- the step --------------------------------------------------------------------------------
    def step(self) -> list[RequestOutput]:
        """Run one scheduled batch; return an output for every request that changed."""
        outputs = [self._output(g) for g in self._aborted]
        self._aborted.clear()
        sched = self.scheduler.schedule()
        if sched.is_empty:
            self._publish_stats()
            return outputs
        now = time.monotonic()
        for req in sched.requests:
            if req.metrics.scheduled_time is None:
                req.metrics.scheduled_time = now
        try:
            result = self.runner.execute(sched)
            return outputs + self._process(sched, result)
        except Exception as e:  # noqa: BLE001 - any failure fails this step's requests, not the engine
            return outputs + self._fail(sched, e)

    def _process(self, sched: SchedulerOutput, result: ModelRunnerOutput) -> list[RequestOutput]:
        """Apply a step's results: counters, tokens, logprobs, stop checks; the outputs that changed."""
        got = {id(r) for r in self.scheduler.update_from_output(sched, result)}
        touched: dict[str, _Group] = {}
        itls: list[float] = []
        now = time.monotonic()
        for req, tok, lp, plp in zip(sched.requests, result.sampled_token_ids, result.logprobs,
                                     result.prompt_logprobs):
            if plp and req.prompt_logprobs is not None:
                req.prompt_logprobs.extend(plp)  # type: ignore[arg-type]
            if id(req) not in got:
                continue
            if lp is not None and req.logprobs is not None:
                req.logprobs.append(lp)  # type: ignore[arg-type]
            self._on_token(req, tok, now, itls)  # type: ignore[arg-type]
            touched[req.group_id] = self._groups[req.group_id]
        outputs = [self._output(g) for g in touched.values()]
        self._account(sched, len(got), itls)
        return outputs

    def _on_token(self, req: Request, tok: int, now: float, itls: list[float]) -> None:
        m = req.metrics
        if m.first_token_time is None:
            m.first_token_time = now
        elif m.last_token_time is not None:
            itls.append(now - m.last_token_time)
        m.last_token_time = now
        status = self.detokenizer.process_token(req, tok)
        if status is not None:
            self.scheduler.finish(req, status)

    def _fail(self, sched: SchedulerOutput, exc: Exception) -> list[RequestOutput]:
        """Finish every request of a failed step with a RequestError (503 for out-of-memory)."""
        if isinstance(exc, torch.OutOfMemoryError):
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            err = RequestError(f"out of memory while running a batch of {sched.total_tokens} tokens; retry later, "
                               f"or lower --max-num-batched-tokens / --max-num-seqs", status=503,
                               kind="out_of_memory")
        else:
            err = RequestError(f"engine error: {type(exc).__name__}: {exc}", status=500, kind="internal_error")
        log.error("step failed for %d requests: %s", len(sched.requests), exc, exc_info=exc)
        groups = {r.group_id: self._groups[r.group_id] for r in sched.requests if r.group_id in self._groups}
        for g in groups.values():
            g.error = err
            for child in g.children:
                child.error = err
                self.scheduler.finish(child, RequestStatus.FINISHED_ERROR)
        self._publish_stats()
        return [self._output(g) for g in groups.values()]

    # -- outputs ---------------------------------------------------------------------------------
    def _output(self, g: _Group) -> RequestOutput:
        """Incremental + cumulative state of a group; retires the group once it is finished."""
        comps = []
        for i, c in enumerate(g.children):
            st, out_ids = c.detok, c.output_token_ids
            delta = self.detokenizer.take_delta(st, c.is_finished)
            lps = c.logprobs
            comps.append(CompletionOutput(
                index=c.index, text=st.text[:st.emitted], token_ids=out_ids,
                logprobs=list(lps) if lps is not None else None, finish_reason=c.status.finish_reason,
                stop_reason=c.stop_reason, text_delta=delta, token_ids_delta=out_ids[g.sent_tokens[i]:],
                logprobs_delta=lps[g.sent_logprobs[i]:] if lps is not None else None))
            g.sent_tokens[i] = len(out_ids)
            g.sent_logprobs[i] = len(lps) if lps is not None else 0
        first = g.children[0]
        finished = g.finished
        if finished:
            self._retire(g)
        plp = first.prompt_logprobs
        return RequestOutput(request_id=g.request_id, prompt_token_ids=g.prompt_token_ids, outputs=comps,
                             finished=finished, prompt_logprobs=list(plp) if plp is not None else None,
                             metrics=g.metrics, num_cached_tokens=first.num_cached_tokens, error=g.error)

    def _retire(self, g: _Group) -> None:
        self._groups.pop(g.request_id, None)
        m = g.metrics
        m.finished_time = time.monotonic()
        reason = "error" if g.error is not None else (g.children[0].status.finish_reason or "abort")
        self.stats.count_finished(reason)
        gen = sum(c.num_output_tokens for c in g.children)
        for listener in self.stats.listeners:
            listener.on_request_finished(
                finish_reason=reason, prompt_tokens=len(g.prompt_token_ids), generation_tokens=gen,
                queue_time=(m.scheduled_time or m.finished_time) - m.arrival_time,
                ttft=None if m.first_token_time is None else m.first_token_time - m.arrival_time,
                prefill_time=(None if m.first_token_time is None or m.scheduled_time is None
                              else m.first_token_time - m.scheduled_time),
                decode_time=None if m.first_token_time is None else m.finished_time - m.first_token_time,
                e2e_time=m.finished_time - m.arrival_time)

    # -- stats -----------------------------------------------------------------------------------
    def _account(self, sched: SchedulerOutput, num_sampled: int, itls: list[float]) -> None:
        prompt = 0
        for req, n in zip(sched.requests, sched.num_scheduled_tokens):
            start = req.num_computed_tokens - n  # already advanced by update_from_output
            prompt += max(0, min(start + n, req.num_prompt_tokens) - start)
        self.stats.add(prompt_tokens=prompt, generation_tokens=num_sampled, num_steps=1)
        for listener in self.stats.listeners:
            listener.on_step(num_prompt_tokens=prompt, num_generation_tokens=num_sampled,
                             inter_token_latencies=itls)
        self._publish_stats()

    def _warn_kv_usage(self, usage: float) -> None:
        if usage >= KV_USAGE_WARN and not self._kv_warned:
            self._kv_warned = True
            log.warning("KV cache %.0f%% full (%d blocks); requests may be preempted — raise --kv-cache-memory "
                        "or lower --max-num-seqs", usage * 100, self.scheduler.block_manager.num_blocks)
        elif usage < KV_USAGE_REARM:
            self._kv_warned = False

    def _publish_stats(self) -> None:
        bm, pool = self.scheduler.block_manager, self.scheduler.state_pool
        pre, q, h = self.scheduler.num_preemptions, bm.prefix_queries, bm.prefix_hits
        p0, q0, h0 = self._counters
        self._counters = (pre, q, h)
        self.stats.add(num_preemptions=pre - p0, prefix_cache_queries=q - q0, prefix_cache_hits=h - h0)
        self._warn_kv_usage(bm.usage)
        self.stats.update(
            num_running=len(self.scheduler.running), num_waiting=len(self.scheduler.waiting), kv_usage=bm.usage,
            state_usage=pool.usage if pool else 0.0, num_kv_blocks=bm.num_blocks, block_size=bm.block_size,
            kv_cache_bytes=self.runner.plan.kv_bytes, state_cache_bytes=self.runner.plan.state_bytes,
            num_state_slots=self.runner.num_state_slots)
