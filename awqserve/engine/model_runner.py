"""ModelRunner: cache allocation, SchedulerOutput → flat tensors → model → logits → sampler.

Reads the scheduled requests (tokens, counters, blocks, slots) and writes nothing on them: its
results travel in a `ModelRunnerOutput` that the scheduler applies (engine/batch.py).

Logits are computed only for rows that are sampled (the last token of each sequence whose
prefill completes this step) plus, when prompt logprobs are requested, the prompt positions of the
chunk not scored before.
"""
from __future__ import annotations

import logging

import torch

from awqserve.attention.metadata import ForwardContext, build_context
from awqserve.compile.compiled_decode import CompiledDecode, WarmupProgress
from awqserve.compile.cuda_graphs import CudaGraphDecode
from awqserve.config.engine_config import EngineConfig
from awqserve.engine.batch import ModelRunnerOutput, SchedulerOutput
from awqserve.engine.block_manager import KvCopy
from awqserve.engine.cache_plan import default_budget, plan_caches
from awqserve.engine.faults import FaultInjector
from awqserve.engine.outputs import TokenLogprob
from awqserve.engine.request import Request
from awqserve.engine.sampler import Sampler
from awqserve.models.base import CausalLM

log = logging.getLogger(__name__)


class ModelRunner:
    """Owns the caches and runs one scheduled batch through the model and the sampler."""

    def __init__(self, model: CausalLM, *, config: EngineConfig, device: torch.device, dtype: torch.dtype,
                 max_model_len: int, sampler: Sampler | None = None) -> None:
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
        self.sampler = sampler or Sampler()
        self.compiled: CompiledDecode | CudaGraphDecode | None = None
        self.faults: FaultInjector | None = None  # test-only (engine/faults.py); set by the engine
        log.info("KV cache: %d blocks x %d tokens (%.1f MiB); state slots: %d (%.1f MiB)", self.plan.num_blocks,
                 self.block_size, self.plan.kv_bytes / 2**20, n, self.plan.state_bytes / 2**20)

    def _alloc(self, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        # CPU: empty (pages are committed on first write, so a large budget costs nothing up front);
        # the attention backends never read slots that were not written for the sequence, and GDN
        # layers start fresh sequences from zero rather than reading their slot.
        if self.device.type == "cpu":
            return torch.empty(shape, dtype=dtype)
        return torch.zeros(shape, dtype=dtype, device=self.device)

    @property
    def num_blocks(self) -> int:
        return self.plan.num_blocks

    @property
    def num_state_slots(self) -> int:
        return self.plan.num_state_slots

    def enable_compiled_decode(self, max_num_seqs: int, max_model_len: int,
                               progress: WarmupProgress | None = None) -> None:
        """Compile the decode step (CPU) and warm every graph up now, before any request runs."""
        compiled = CompiledDecode(self.model, max_model_len=max_model_len, device=self.device)
        compiled.warmup(self.kv_caches, self.block_size, max_num_seqs, progress)
        self.compiled = compiled if compiled.enabled else None

    def enable_cuda_graphs(self, max_num_seqs: int, max_model_len: int) -> None:
        """Capture decode CUDA graphs at bucketed batch sizes now, before any request runs
        (compile/cuda_graphs.py); a capture failure is logged and the runner stays eager."""
        graphs = CudaGraphDecode(self.model, kv_caches=self.kv_caches, conv_states=self.conv_states,
                                 recurrent_states=self.recurrent_states, block_size=self.block_size,
                                 max_num_seqs=min(max_num_seqs, self.plan.num_state_slots or max_num_seqs),
                                 max_model_len=max_model_len, device=self.device)
        try:
            graphs.capture_all()
        except Exception:  # noqa: BLE001 - any capture problem means "serve eager", never a failed start
            log.warning("CUDA graph capture failed; decoding eagerly", exc_info=True)
            return
        self.compiled = graphs
        log.info("captured decode CUDA graphs for batch sizes %s", graphs.buckets)

    # -- one step --------------------------------------------------------------------------------
    def copy_kv(self, copies: list[KvCopy]) -> None:
        """Partial prefix-cache hits: copy leading token slots between blocks in every attention layer,
        in order (a later copy may overwrite an earlier one's source)."""
        for c in copies:
            for cache in self.kv_caches:
                cache[:, c.dst, :c.num_tokens].copy_(cache[:, c.src, :c.num_tokens])

    def build_inputs(self, sched: SchedulerOutput) -> tuple[torch.Tensor, ForwardContext]:
        """Flat input ids and the ForwardContext of a batch."""
        reqs, q_lens = sched.requests, sched.num_scheduled_tokens
        c_lens = [r.num_computed_tokens for r in reqs]
        ids: list[int] = []
        for r, c, q in zip(reqs, c_lens, q_lens):
            ids.extend(r.all_token_ids[c:c + q])
        slots = [_state_slot(r) for r in reqs] if self.spec.state else None
        ctx = build_context(query_lens=list(q_lens), context_lens=c_lens, block_tables=[r.block_ids for r in reqs],
                            block_size=self.block_size, kv_caches=self.kv_caches, state_slots=slots,
                            conv_states=self.conv_states, recurrent_states=self.recurrent_states,
                            device=self.device)
        return torch.tensor(ids, dtype=torch.int64, device=self.device), ctx

    @torch.inference_mode()
    def execute(self, sched: SchedulerOutput) -> ModelRunnerOutput:
        """Run the batch; sample for requests whose scheduled tokens reach their last token. Raises if
        the forward fails (the whole batch); a failure confined to one sampled row is in `errors`."""
        reqs, q_lens = sched.requests, sched.num_scheduled_tokens
        self.copy_kv(sched.kv_copies)  # first: a re-run of a failed batch (LLMEngine._isolate) has none
        if self.faults is not None:
            self.faults.before_forward([r.group_id for r in reqs])
        input_ids, ctx = self.build_inputs(sched)
        ends = [0] + _cumsum(q_lens)
        sample_idx = [i for i, (r, q) in enumerate(zip(reqs, q_lens)) if r.num_computed_tokens + q == r.num_tokens]
        rows = [ends[i + 1] - 1 for i in sample_idx]
        prompt_rows, prompt_targets, prompt_owner = self._prompt_rows(reqs, q_lens, ends)
        sampled: list[int | None] = [None] * len(reqs)
        lps: list[TokenLogprob | None] = [None] * len(reqs)
        plps: list[list[TokenLogprob] | None] = [None] * len(reqs)
        all_rows = rows + prompt_rows
        if (self.compiled is not None and len(rows) == len(reqs) and not prompt_rows
                and self.compiled.eligible(ctx)):
            logits = self.compiled(input_ids, ctx)  # decode-only: every row is sampled, in order
        else:
            hidden = self.model(input_ids, ctx)
            if not all_rows:
                return ModelRunnerOutput(sampled, lps, plps)
            logits = self.model.compute_logits(hidden[torch.tensor(all_rows, device=hidden.device)]).float()
        errors: dict[int, Exception] = {}
        if rows:
            sampling, sreqs = logits[: len(rows)], [reqs[i] for i in sample_idx]
            if self.faults is not None:
                sampling = sampling.clone()
                self.faults.corrupt_logits(sampling, [r.group_id for r in sreqs])
            toks, recs, errs = self.sampler.sample_rows(sampling, sreqs)
            for i, t, rec in zip(sample_idx, toks, recs):
                sampled[i], lps[i] = t, rec
            errors = {sample_idx[j]: e for j, e in errs.items()}
        if prompt_rows:
            self._fill_prompt_logprobs(logits[len(rows):], prompt_targets, prompt_owner, reqs, plps)
        return ModelRunnerOutput(sampled, lps, plps, errors)

    @staticmethod
    def _prompt_rows(reqs: list[Request], q_lens: list[int], ends: list[int]) -> tuple[list[int], list[int], list[int]]:
        """Rows whose logits score the next prompt token (prompt logprobs), their targets and owners.
        Positions scored before a preemption (`prompt_logprobs_done`) are not scored again."""
        rows: list[int] = []
        targets: list[int] = []
        owner: list[int] = []
        for i, (r, q) in enumerate(zip(reqs, q_lens)):
            if not r.needs_prompt_logprobs:
                continue
            c = r.num_computed_tokens
            done = r.prompt_logprobs_done - 1  # positions already scored (position p scores token p + 1)
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


def _state_slot(r: Request) -> int:
    assert r.state_slot is not None, f"{r} of a hybrid model runs without a state slot"
    return r.state_slot


def _cumsum(xs: list[int]) -> list[int]:
    acc, out = 0, []
    for x in xs:
        acc += x
        out.append(acc)
    return out
