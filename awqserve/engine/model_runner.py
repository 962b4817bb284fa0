"""ModelRunner: cache allocation, SchedulerOutput → flat tensors → model → logits → sampler.

Caches come from `model.cache_spec()`: one paged KV tensor [2, num_blocks, block_size, Hkv, D] per
attention layer and, for hybrid models, one conv and one recurrent state tensor per GDN layer with a
row per state slot. `num_blocks` is derived from a memory budget and capped at what `max_num_seqs`
sequences of `max_model_len` tokens could ever use.

Logits are computed only for rows that are sampled (the last token of each sequence whose
prefill completes this step) plus, when prompt logprobs are requested, the prompt positions of the
chunk.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch

from awqserve.attention.decode_op import build_decode_meta
from awqserve.attention.metadata import CacheSpec, ForwardContext
from awqserve.config.engine_config import EngineConfig
from awqserve.engine.compiled_decode import CompiledDecode
from awqserve.engine.outputs import TokenLogprob
from awqserve.engine.request import Request
from awqserve.engine.sampler import Sampler
from awqserve.engine.scheduler import ModelRunnerOutput, SchedulerOutput
from awqserve.models.base import CausalLM

log = logging.getLogger(__name__)

CPU_DEFAULT_KV_BYTES = 1 << 30
_CUDA_ACTIVATION_RESERVE = 1 << 30  # headroom for activations, logits and allocator slack


@dataclass(frozen=True)
class CachePlan:
    num_blocks: int
    block_bytes: int
    num_state_slots: int
    slot_bytes: int

    @property
    def kv_bytes(self) -> int:
        return self.num_blocks * self.block_bytes

    @property
    def state_bytes(self) -> int:
        return self.num_state_slots * self.slot_bytes


def _numel(shape: tuple[int, ...]) -> int:
    return math.prod(shape)


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def plan_caches(spec: CacheSpec, *, config: EngineConfig, max_model_len: int, dtype: torch.dtype,
                budget_bytes: int) -> CachePlan:
    """Blocks and state slots that fit `budget_bytes` (state slots first: one per possible sequence)."""
    bs, elem = config.block_size, _itemsize(dtype)
    block_bytes = sum(2 * bs * s.num_kv_heads * s.head_dim * elem for s in spec.attention)
    slot_bytes = sum(_numel(s.conv_shape) * _itemsize(s.conv_dtype)
                     + _numel(s.recurrent_shape) * _itemsize(s.recurrent_dtype) for s in spec.state)
    slots = config.max_num_seqs if spec.state else 0
    per_seq = -(-max_model_len // bs)
    cap = config.max_num_seqs * per_seq
    left = budget_bytes - slots * slot_bytes
    num_blocks = cap if block_bytes == 0 else min(cap, left // block_bytes)
    if num_blocks < per_seq:
        need = per_seq * block_bytes + slots * slot_bytes
        raise ValueError(
            f"KV cache budget {budget_bytes / 2**20:.0f} MiB cannot hold one sequence of max_model_len="
            f"{max_model_len} tokens (needs {need / 2**20:.0f} MiB); raise --kv-cache-memory or lower "
            f"--max-model-len")
    return CachePlan(num_blocks, block_bytes, slots, slot_bytes)


def default_budget(config: EngineConfig, device: torch.device) -> int:
    if config.kv_cache_memory is not None:
        return config.kv_cache_memory
    if device.type != "cuda":
        return CPU_DEFAULT_KV_BYTES
    free, total = torch.cuda.mem_get_info(device)
    used = total - free
    return max(0, int(total * config.gpu_memory_utilization) - used - _CUDA_ACTIVATION_RESERVE)


class ModelRunner:
    """Owns the caches and runs one scheduled batch through the model and the sampler."""

    def __init__(self, model: CausalLM, *, config: EngineConfig, device: torch.device, dtype: torch.dtype,
                 max_model_len: int) -> None:
        self.model = model
        self.device = device
        self.dtype = dtype
        self.block_size = config.block_size
        self.spec = model.cache_spec()
        self.plan = plan_caches(self.spec, config=config, max_model_len=max_model_len, dtype=dtype,
                                budget_bytes=default_budget(config, device))
        self.kv_caches = [self._alloc((2, self.plan.num_blocks, self.block_size, s.num_kv_heads, s.head_dim), dtype)
                          for s in self.spec.attention]
        n = self.plan.num_state_slots
        self.conv_states = [self._alloc((n, *s.conv_shape), s.conv_dtype) for s in self.spec.state]
        self.recurrent_states = [self._alloc((n, *s.recurrent_shape), s.recurrent_dtype) for s in self.spec.state]
        self.sampler = Sampler()
        self.compiled: CompiledDecode | None = None
        log.info("KV cache: %d blocks x %d tokens (%.1f MiB); state slots: %d (%.1f MiB)", self.plan.num_blocks,
                 self.block_size, self.plan.kv_bytes / 2**20, n, self.plan.state_bytes / 2**20)

    def _alloc(self, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        # CPU: empty (pages are committed on first write, so a large budget costs nothing up front);
        # the attention backends never read slots that were not written for the sequence.
        if self.device.type == "cpu":
            return torch.empty(shape, dtype=dtype)
        return torch.zeros(shape, dtype=dtype, device=self.device)

    @property
    def num_blocks(self) -> int:
        return self.plan.num_blocks

    @property
    def num_state_slots(self) -> int:
        return self.plan.num_state_slots

    # -- one step --------------------------------------------------------------------------------
    def build_context(self, sched: SchedulerOutput) -> tuple[torch.Tensor, ForwardContext]:
        """Flat input ids and the ForwardContext of a batch (vectorised; a few host ops per request)."""
        reqs, q_lens = sched.requests, sched.num_scheduled_tokens
        c_lens = [r.num_computed_tokens for r in reqs]
        ids: list[int] = []
        for r, c, q in zip(reqs, c_lens, q_lens):
            ids.extend(r.all_token_ids[c:c + q])
        b, bs = len(reqs), self.block_size
        width = max(len(r.block_ids) for r in reqs)
        tables = torch.tensor([r.block_ids + [0] * (width - len(r.block_ids)) for r in reqs], dtype=torch.int64)
        q_t = torch.tensor(q_lens, dtype=torch.int64)
        c_t = torch.tensor(c_lens, dtype=torch.int64)
        starts = torch.zeros(b + 1, dtype=torch.int64)
        torch.cumsum(q_t, 0, out=starts[1:])
        if len(ids) == b:  # decode-only: one token per sequence
            seq_idx, positions = torch.arange(b), c_t
        else:
            seq_idx = torch.repeat_interleave(torch.arange(b), q_t)
            positions = torch.arange(len(ids)) - starts[seq_idx] + c_t[seq_idx]
        slots = tables[seq_idx, positions // bs] * bs + positions % bs
        dev = self.device
        tables = tables.to(dev)
        decode = build_decode_meta(tables, [c + 1 for c in c_lens], bs) if len(ids) == b else None
        ctx = ForwardContext(
            positions=positions.to(dev), query_start_loc=starts.to(dev), seq_lens=(c_t + q_t).to(dev),
            context_lens=c_t.to(dev), slot_mapping=slots.to(dev), block_tables=tables, block_size=bs,
            kv_caches=self.kv_caches,
            state_slots=(torch.tensor([r.state_slot for r in reqs], dtype=torch.int64, device=dev)
                         if self.spec.state else None),
            conv_states=self.conv_states, recurrent_states=self.recurrent_states,
            query_lens_cpu=list(q_lens), seq_lens_cpu=[c + q for c, q in zip(c_lens, q_lens)],
            context_lens_cpu=c_lens, decode=decode)
        return torch.tensor(ids, dtype=torch.int64, device=dev), ctx

    def _zero_new_slots(self, slots: list[int]) -> None:
        if not slots or not self.spec.state:
            return
        idx = torch.tensor(slots, dtype=torch.int64, device=self.device)
        for t in (*self.conv_states, *self.recurrent_states):
            t.index_fill_(0, idx, 0)

    def enable_compiled_decode(self, max_num_seqs: int, max_model_len: int) -> None:
        """Compile the decode step (CPU) and warm every graph up now, before any request runs."""
        compiled = CompiledDecode(self.model, max_model_len=max_model_len, device=self.device)
        compiled.warmup(self.kv_caches, self.block_size, max_num_seqs)
        self.compiled = compiled if compiled.enabled else None

    @torch.inference_mode()
    def execute(self, sched: SchedulerOutput) -> ModelRunnerOutput:
        """Run the batch; sample for requests whose scheduled tokens reach their last token."""
        self._zero_new_slots(sched.new_state_slots)
        input_ids, ctx = self.build_context(sched)
        reqs, q_lens = sched.requests, sched.num_scheduled_tokens
        ends = [0] + _cumsum(q_lens)
        sample_idx = [i for i, (r, q) in enumerate(zip(reqs, q_lens)) if r.num_computed_tokens + q == r.num_tokens]
        rows = [ends[i + 1] - 1 for i in sample_idx]
        prompt_rows, prompt_targets, prompt_owner = self._prompt_rows(reqs, q_lens, ends)
        sampled: list[int | None] = [None] * len(reqs)
        lps: list[TokenLogprob | None] = [None] * len(reqs)
        plps: list[list[TokenLogprob] | None] = [None] * len(reqs)
        all_rows = rows + prompt_rows
        if (self.compiled is not None and len(rows) == len(reqs) and not prompt_rows
                and CompiledDecode.eligible(ctx)):
            logits = self.compiled(input_ids, ctx)  # decode-only: every row is sampled, in order
        else:
            hidden = self.model(input_ids, ctx)
            if not all_rows:
                return ModelRunnerOutput(sampled, lps, plps)
            logits = self.model.compute_logits(hidden[torch.tensor(all_rows, device=hidden.device)]).float()
        if rows:
            toks, recs = self.sampler(logits[: len(rows)], [reqs[i] for i in sample_idx])
            for i, t, rec in zip(sample_idx, toks, recs):
                sampled[i], lps[i] = t, rec
        if prompt_rows:
            self._fill_prompt_logprobs(logits[len(rows):], prompt_targets, prompt_owner, reqs, plps)
        return ModelRunnerOutput(sampled, lps, plps)

    @staticmethod
    def _prompt_rows(reqs: list[Request], q_lens: list[int], ends: list[int]) -> tuple[list[int], list[int], list[int]]:
        """Rows whose logits score the next prompt token (prompt logprobs), their targets and owners."""
        rows: list[int] = []
        targets: list[int] = []
        owner: list[int] = []
        for i, (r, q) in enumerate(zip(reqs, q_lens)):
            if not r.needs_prompt_logprobs:
                continue
            c = r.num_computed_tokens
            done = len(r.prompt_logprobs) - 1  # type: ignore[arg-type]  # positions already scored
            for pos in range(max(c, done), min(c + q, r.num_prompt_tokens - 1)):
                rows.append(ends[i] + pos - c)
                targets.append(r.all_token_ids[pos + 1])
                owner.append(i)
        return rows, targets, owner

    def _fill_prompt_logprobs(self, logits: torch.Tensor, targets: list[int], owner: list[int],
                              reqs: list[Request], out: list[list[TokenLogprob] | None]) -> None:
        for i in sorted(set(owner)):
            sel = [j for j, o in enumerate(owner) if o == i]
            k = reqs[i].params.prompt_logprobs or 0
            out[i] = self.sampler.prompt_logprobs(logits[sel], [targets[j] for j in sel], k)


def _cumsum(xs: list[int]) -> list[int]:
    acc, out = 0, []
    for x in xs:
        acc += x
        out.append(acc)
    return out
