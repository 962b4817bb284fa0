"""Batched sampling: logit processors, greedy / random sampling with per-request seeds, logprobs.

Order of operations per row (vLLM's): logprobs are taken from the raw `log_softmax` of the model's
logits; then logit_bias, min_tokens suppression of stop tokens, repetition / frequency / presence
penalties; greedy rows take the argmax; the others are divided by their temperature, filtered by
top-k, top-p and min-p, and sampled with the exponential-race trick (`argmax(p / q)`, q ~ Exp(1)),
which needs one random draw per vocabulary entry. A seeded request draws its noise from its own
`torch.Generator`, so its tokens do not depend on what else is in the batch.
"""
from __future__ import annotations

import torch

from typing import TYPE_CHECKING

from awqserve.engine.faults import nan_error, sampling_error
from awqserve.engine.outputs import TokenLogprob
from awqserve.engine.request import Request

if TYPE_CHECKING:
    from awqserve.engine.structured_output import StructuredOutputManager

_NEG_INF = float("-inf")


def _needs_processing(req: Request) -> bool:
    p = req.params
    return bool(p.logit_bias or p.presence_penalty or p.frequency_penalty or p.repetition_penalty != 1.0
                or (p.min_tokens and req.num_output_tokens < p.min_tokens and req.stop_token_ids))


def _pad(rows: list[list[int]], fill: int, device: torch.device) -> torch.Tensor:
    width = max((len(r) for r in rows), default=0) or 1
    return torch.tensor([r + [fill] * (width - len(r)) for r in rows], dtype=torch.int64, device=device)


def _logprob_records(lps: torch.Tensor, chosen: list[int], ks: list[int]) -> list[TokenLogprob]:
    """One TokenLogprob per row of log-probabilities `lps` [N, V] for tokens `chosen` with top-k[i]."""
    idx = torch.tensor(chosen, dtype=torch.int64, device=lps.device)
    chosen_lp = lps.gather(1, idx[:, None])[:, 0].tolist()
    kmax = max(ks, default=0)
    top_v, top_i = ([], []) if kmax == 0 else (t.tolist() for t in lps.topk(kmax, dim=-1))
    out = []
    for r, (tok, lp, k) in enumerate(zip(chosen, chosen_lp, ks)):
        top = dict(zip(top_i[r][:k], top_v[r][:k])) if k else {}
        out.append(TokenLogprob(token_id=tok, logprob=lp, top=top))
    return out


class Sampler:
    """Stateless apart from the per-request generators it stores on `Request.generator`.

    With `structured` (the engine's StructuredOutputManager), rows of constrained requests are masked
    to their grammar after the raw logprobs are taken and before any other processing.
    """

    def __init__(self, structured: StructuredOutputManager | None = None) -> None:
        self.structured = structured

    def __call__(self, logits: torch.Tensor, requests: list[Request]) -> tuple[list[int], list[TokenLogprob | None]]:
        """Sample one token per row of float32 `logits` [B, V] (row i belongs to requests[i]).

        May modify `logits` in place. Returns the token ids and, per row, a logprob record when the
        request asked for logprobs (else None).
        """
        lp_rows = [i for i, r in enumerate(requests) if r.params.logprobs is not None]
        raw_lps = torch.log_softmax(logits[lp_rows], dim=-1) if lp_rows else None
        if self.structured is not None:
            self.structured.apply(logits, requests)
        if all(r.params.greedy for r in requests) and not any(_needs_processing(r) for r in requests):
            tokens = logits.argmax(dim=-1)  # fast path: plain greedy
        else:
            tokens = self._sample(logits, requests)
        token_list = tokens.tolist()
        records: list[TokenLogprob | None] = [None] * len(requests)
        if raw_lps is not None:
            ks = [requests[i].params.logprobs or 0 for i in lp_rows]
            for i, rec in zip(lp_rows, _logprob_records(raw_lps, [token_list[i] for i in lp_rows], ks)):
                records[i] = rec
        return token_list, records

    def sample_rows(self, logits: torch.Tensor, requests: list[Request]
                    ) -> tuple[list[int | None], list[TokenLogprob | None], dict[int, Exception]]:
        """Like `__call__`, but a failure confined to one row fails that row only.

        A row whose raw logits are not finite, or whose request cannot be prepared (its seed does not
        fit a generator), is left out with an error; the rest are sampled as a batch, and should that
        raise, one by one from the untouched logits. Returns (token or None, record or None, errors
        by row). `logits` is not modified."""
        errors: dict[int, Exception] = {}
        finite = torch.isfinite(logits).all(dim=-1).tolist()
        for i, r in enumerate(requests):
            if not finite[i]:
                errors[i] = nan_error()
                continue
            try:
                self._prepare(r, logits.device)
            except Exception as e:  # noqa: BLE001 - this request's own parameters: fail it alone
                errors[i] = sampling_error(e)
        ok = [i for i in range(len(requests)) if i not in errors]
        tokens: list[int | None] = [None] * len(requests)
        records: list[TokenLogprob | None] = [None] * len(requests)
        try:
            got = self(logits[ok], [requests[i] for i in ok]) if ok else ([], [])
            pairs = [(i, t, rec) for i, t, rec in zip(ok, *got)]
        except Exception:  # noqa: BLE001 - find the row(s) at fault; the others still get their token
            pairs = []
            for i in ok:
                try:
                    (t,), (rec,) = self(logits[i:i + 1].clone(), [requests[i]])
                    pairs.append((i, t, rec))
                except Exception as e:  # noqa: BLE001
                    errors[i] = sampling_error(e)
        for i, t, rec in pairs:
            tokens[i], records[i] = t, rec
        return tokens, records, errors

    @staticmethod
    def _prepare(r: Request, device: torch.device) -> None:
        """Per-request set-up that can fail on the request's own values (before any draw)."""
        if r.params.seed is not None and r.generator is None:
            r.generator = torch.Generator(device=device).manual_seed(r.params.seed + r.index)

    # -- processors ------------------------------------------------------------------------------
    def _sample(self, x: torch.Tensor, requests: list[Request]) -> torch.Tensor:
        self._apply_bias_and_min_tokens(x, requests)
        self._apply_penalties(x, requests)
        tokens = x.argmax(dim=-1)
        rand = [i for i, r in enumerate(requests) if not r.params.greedy]
        if rand:
            tokens[rand] = self._random(x[rand], [requests[i] for i in rand])
        return tokens

    @staticmethod
    def _apply_bias_and_min_tokens(x: torch.Tensor, requests: list[Request]) -> None:
        vocab = x.shape[1]
        for i, r in enumerate(requests):
            p = r.params
            if p.logit_bias:
                ids = [t for t in p.logit_bias if 0 <= t < vocab]
                x[i, ids] += torch.tensor([p.logit_bias[t] for t in ids], dtype=x.dtype, device=x.device)
            if p.min_tokens and r.num_output_tokens < p.min_tokens and r.stop_token_ids:
                x[i, [t for t in r.stop_token_ids if 0 <= t < vocab]] = _NEG_INF

    @staticmethod
    def _apply_penalties(x: torch.Tensor, requests: list[Request]) -> None:
        rows = [i for i, r in enumerate(requests) if r.params.presence_penalty or r.params.frequency_penalty
                or r.params.repetition_penalty != 1.0]
        if not rows:
            return
        vocab, dev = x.shape[1], x.device
        reqs = [requests[i] for i in rows]
        sub = x[rows]
        # Output-token counts for presence/frequency; an extra column absorbs the padding.
        outs = _pad([r.output_token_ids for r in reqs], vocab, dev)
        counts = torch.zeros(len(rows), vocab + 1, dtype=x.dtype, device=dev)
        counts.scatter_add_(1, outs, torch.ones_like(outs, dtype=x.dtype))
        counts = counts[:, :vocab]
        rep = torch.tensor([r.params.repetition_penalty for r in reqs], dtype=x.dtype, device=dev)[:, None]
        if bool((rep != 1.0).any()):
            # Repetition penalty covers prompt and output tokens (as in transformers / vLLM).
            seen_ids = _pad([r.all_token_ids for r in reqs], vocab, dev)
            seen = torch.zeros(len(rows), vocab + 1, dtype=torch.bool, device=dev)
            seen.scatter_(1, seen_ids, True)
            penalised = torch.where(sub > 0, sub / rep, sub * rep)
            sub = torch.where(seen[:, :vocab], penalised, sub)
        freq = torch.tensor([r.params.frequency_penalty for r in reqs], dtype=x.dtype, device=dev)[:, None]
        pres = torch.tensor([r.params.presence_penalty for r in reqs], dtype=x.dtype, device=dev)[:, None]
        sub = sub - freq * counts - pres * (counts > 0).to(x.dtype)
        x[rows] = sub

    def _random(self, x: torch.Tensor, requests: list[Request]) -> torch.Tensor:
        """Temperature, top-k, top-p, min-p, then one sample per row of `x` [R, V]."""
        vocab, dev = x.shape[1], x.device
        temps = torch.tensor([r.params.temperature for r in requests], dtype=x.dtype, device=dev)
        x = x / temps[:, None]
        top_ks = [r.params.top_k if 0 < r.params.top_k < vocab else vocab for r in requests]
        top_ps = [r.params.top_p for r in requests]
        if any(p < 1.0 for p in top_ps):
            x = self._top_k_top_p(x, top_ks, top_ps)
        elif any(k < vocab for k in top_ks):
            x = self._top_k(x, top_ks)
        min_ps = [r.params.min_p for r in requests]
        probs = torch.softmax(x, dim=-1)
        if any(m > 0.0 for m in min_ps):
            m = torch.tensor(min_ps, dtype=x.dtype, device=dev)[:, None]
            probs = probs.masked_fill(probs < m * probs.amax(dim=-1, keepdim=True), 0.0)
        return (probs / self._noise(probs, requests)).argmax(dim=-1)

    @staticmethod
    def _top_k(x: torch.Tensor, top_ks: list[int]) -> torch.Tensor:
        k = torch.tensor(top_ks, device=x.device)
        kmax = int(max(top_ks))
        values = x.topk(kmax, dim=-1).values
        kth = values.gather(1, (k.clamp(max=kmax) - 1)[:, None])
        kth = torch.where((k >= x.shape[1])[:, None], torch.full_like(kth, _NEG_INF), kth)
        return x.masked_fill(x < kth, _NEG_INF)

    @staticmethod
    def _top_k_top_p(x: torch.Tensor, top_ks: list[int], top_ps: list[float]) -> torch.Tensor:
        srt, idx = x.sort(dim=-1, descending=True)
        ranks = torch.arange(x.shape[1], device=x.device)[None, :]
        srt = srt.masked_fill(ranks >= torch.tensor(top_ks, device=x.device)[:, None], _NEG_INF)
        probs = torch.softmax(srt, dim=-1)
        # Keep the smallest prefix whose mass reaches top_p (the first token always survives).
        before = probs.cumsum(dim=-1) - probs
        p = torch.tensor(top_ps, dtype=x.dtype, device=x.device)[:, None]
        srt = srt.masked_fill(before > p, _NEG_INF)
        return torch.empty_like(x).scatter_(1, idx, srt)

    @staticmethod
    def _noise(probs: torch.Tensor, requests: list[Request]) -> torch.Tensor:
        q = torch.empty_like(probs).exponential_()
        for i, r in enumerate(requests):
            if r.params.seed is None:
                continue
            Sampler._prepare(r, probs.device)
            q[i].exponential_(generator=r.generator)
        return q

    # -- prompt logprobs -------------------------------------------------------------------------
    @staticmethod
    def prompt_logprobs(logits: torch.Tensor, targets: list[int], k: int) -> list[TokenLogprob]:
        """Records for prompt positions: row j of `logits` predicts `targets[j]`."""
        return _logprob_records(torch.log_softmax(logits, dim=-1), targets, [k] * len(targets))
