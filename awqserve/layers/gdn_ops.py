"""Gated DeltaNet kernels: causal depthwise conv with carried state, and the gated delta rule.

Layout: the step's tokens are flat (sequence after sequence), `cu_seqlens` (host ints, length N+1)
delimits the N sequences. Every function takes each sequence's *initial* state and returns its
*final* state, so a sequence can be continued by any number of tokens (chunked prefill, decode).

Gated delta rule, per value head, state S [K, V] (float32):
    S <- S * exp(g_t);  delta = beta_t * (v_t - S^T k_t);  S <- S + k_t delta^T;  o_t = S^T q_t
with q, k L2-normalised and q scaled (done here when `use_qk_l2norm`). Two torch forms compute it:
- recurrent: one step per token (decode, and the reference),
- chunked: chunks of 64 tokens; inside a chunk the delta-rule corrections solve one unit
  lower-triangular system (the UT / WY transform), between chunks the state is carried.
On CUDA, flash-linear-attention's Triton kernels are used when `fla` is importable (bf16 inputs).
"""
from __future__ import annotations

import functools
from typing import Sequence

import torch
import torch.nn.functional as F

CHUNK = 64
"""Chunk length of the chunked form (the size fla uses too)."""
SHORT_SEQ = 8
"""Sequences up to this many tokens run the recurrent form on CPU: fewer ops than one chunk."""


def l2norm(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """x / sqrt(sum(x^2) + eps) over the last dim, in float32 (the normalisation fla applies to q, k)."""
    xf = x.float()
    return xf * torch.rsqrt(xf.pow(2).sum(-1, keepdim=True) + eps)


# -- causal depthwise conv ----------------------------------------------------------------------
def causal_conv1d(x: torch.Tensor, weight: torch.Tensor, cu_seqlens: Sequence[int],
                  initial_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Depthwise causal conv of each sequence, continuing from its stored inputs (no bias, no activation).

    x [T, D]; weight [D, W]; initial_states [N, D, W-1] (the last W-1 inputs before this step, zeros
    for a new sequence). Returns y [T, D] in x's dtype and final states [N, D, W-1] in the states'
    dtype. y_t = sum_i weight[:, i] * xx[t + i] with xx = [state; x].
    """
    n = len(cu_seqlens) - 1
    lens = [cu_seqlens[i + 1] - cu_seqlens[i] for i in range(n)]
    width = weight.shape[1]
    if n and all(length == 1 for length in lens):
        # decode: one new input per sequence, one dot product per channel
        window = torch.cat([initial_states.to(x.dtype), x.unsqueeze(-1)], dim=-1)  # [N, D, W]
        y = (window * weight.to(x.dtype)).sum(-1)
        return y, window[..., 1:].to(initial_states.dtype)
    ys, finals = [], []
    w = weight.to(x.dtype).unsqueeze(1)  # [D, 1, W]
    for i in range(n):
        xs = x[cu_seqlens[i]:cu_seqlens[i + 1]].t()  # [D, L]
        xx = torch.cat([initial_states[i].to(x.dtype), xs], dim=-1)  # [D, W-1+L]
        ys.append(F.conv1d(xx.unsqueeze(0), w, groups=xx.shape[0])[0].t())
        finals.append(xx[:, xx.shape[1] - (width - 1):])
    y = torch.cat(ys) if ys else x.new_zeros((0, x.shape[1]))
    final = torch.stack(finals).to(initial_states.dtype) if finals else initial_states.clone()
    return y, final


# -- gated delta rule: torch forms over a batch of equal-length rows ------------------------------
def recurrent_delta_rule(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor,
                         beta: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-by-token gated delta rule over B independent rows (a row is one head of one sequence).

    q, k [B, L, K] (already normalised and scaled); v [B, L, V]; g, beta [B, L]; state [B, K, V].
    All float32. Returns o [B, L, V] and the final state [B, K, V] (a new tensor).
    """
    s = state.clone()
    out = v.new_empty(v.shape)
    for t in range(q.shape[1]):
        s = s * g[:, t].exp()[:, None, None]
        kt = k[:, t]
        pred = torch.bmm(kt.unsqueeze(1), s).squeeze(1)  # S^T k  [B, V]
        delta = beta[:, t, None] * (v[:, t] - pred)
        s = s + kt.unsqueeze(-1) * delta.unsqueeze(1)
        out[:, t] = torch.bmm(q[:, t].unsqueeze(1), s).squeeze(1)
    return out, s


def chunked_delta_rule(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor, beta: torch.Tensor,
                       state: torch.Tensor, chunk: int = CHUNK) -> tuple[torch.Tensor, torch.Tensor]:
    """Same contract as `recurrent_delta_rule`, computed chunk by chunk.

    Within a chunk with local log-decay prefix sums c_i and state S0 at its start, the corrections
    delta (rows) satisfy (I + A) delta = beta*V - beta*exp(c)*K S0, with A[i, j] = beta_i
    exp(c_i - c_j) k_i.k_j for j < i. Solving once per chunk for the two right-hand sides gives
    delta = U - W S0; then O = exp(c) Q S0 + (causal exp(c_i - c_j) q_i.k_j) delta and
    S_end = exp(c_last) S0 + (exp(c_last - c) K)^T delta. Only the carry over chunks is sequential.
    Padding (g = 0, beta = 0, k = 0) leaves the state untouched, so lengths need not divide `chunk`.
    """
    b, length = k.shape[:2]
    dv = v.shape[-1]
    pad = (-length) % chunk
    if pad:
        q, k, v = (F.pad(x, (0, 0, 0, pad)) for x in (q, k, v))
        g, beta = F.pad(g, (0, pad)), F.pad(beta, (0, pad))
    n = (length + pad) // chunk
    q, k, v = (x.reshape(b, n, chunk, x.shape[-1]) for x in (q, k, v))
    g, beta = g.reshape(b, n, chunk), beta.reshape(b, n, chunk)

    c = g.cumsum(-1)  # [B, n, C] log decay from the chunk start through position i
    diff = c.unsqueeze(-1) - c.unsqueeze(-2)  # c_i - c_j
    causal = torch.ones(chunk, chunk, dtype=torch.bool, device=q.device).tril()
    decay = diff.masked_fill(~causal, float("-inf")).exp()  # exp(c_i - c_j), zero above the diagonal
    kb = k * beta.unsqueeze(-1)
    a = (kb @ k.transpose(-1, -2)) * decay
    system = a.tril(-1) + torch.eye(chunk, dtype=a.dtype, device=a.device)
    rhs = torch.cat([v * beta.unsqueeze(-1), kb * c.exp().unsqueeze(-1)], dim=-1)
    sol = torch.linalg.solve_triangular(system, rhs, upper=False, unitriangular=True)
    u, w = sol[..., :dv], sol[..., dv:]
    intra = (q @ k.transpose(-1, -2)) * decay
    q_in = q * c.exp().unsqueeze(-1)  # reads of the chunk-start state
    k_out = k * (c[..., -1:] - c).exp().unsqueeze(-1)  # writes decayed to the chunk end
    chunk_decay = c[..., -1].exp()  # [B, n]

    s = state.clone()
    out = v.new_empty((b, n, chunk, dv))
    for i in range(n):
        delta = u[:, i] - w[:, i] @ s
        out[:, i] = q_in[:, i] @ s + intra[:, i] @ delta
        s = s * chunk_decay[:, i, None, None] + k_out[:, i].transpose(-1, -2) @ delta
    return out.reshape(b, n * chunk, dv)[:, :length], s


# -- varlen front end ---------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _fla_ops():
    """fla's (chunk, fused_recurrent) gated delta rule functions, or None when fla is not installed."""
    try:
        from fla.ops.gated_delta_rule import chunk_gated_delta_rule, fused_recurrent_gated_delta_rule
    except Exception:  # noqa: BLE001 - any import failure (missing triton, CUDA mismatch) means "no fla"
        return None
    return chunk_gated_delta_rule, fused_recurrent_gated_delta_rule


def fla_available() -> bool:
    return _fla_ops() is not None


def _prepare(q: torch.Tensor, k: torch.Tensor, num_v_heads: int, scale: float,
             use_qk_l2norm: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalise and scale q, k in float32 and repeat key heads to value heads (head h uses h // r)."""
    if use_qk_l2norm:
        q, k = l2norm(q), l2norm(k)
    q, k = q.float() * scale, k.float()
    rep = num_v_heads // q.shape[1]
    if rep > 1:
        q, k = q.repeat_interleave(rep, dim=1), k.repeat_interleave(rep, dim=1)
    return q, k


def gated_delta_rule(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor, beta: torch.Tensor, *,
                     cu_seqlens: Sequence[int], initial_state: torch.Tensor, scale: float | None = None,
                     use_qk_l2norm: bool = True, backend: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """Gated delta rule over the flat varlen batch.

    q, k [T, H, K]; v [T, HV, V] with HV a multiple of H (value head h reads key head h // (HV/H));
    g (log decay, <= 0) and beta [T, HV]; initial_state [N, HV, K, V] float32 (zeros for new
    sequences). Returns o [T, HV, V] in v's dtype and the final states [N, HV, K, V] float32.
    `backend`: "auto" (fla on CUDA when installed, else torch), "torch", "recurrent" (torch,
    token by token: the reference) or "chunked" (torch chunked form for every sequence).
    """
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    if backend == "auto" and q.is_cuda and fla_available():
        return _fla_gated_delta_rule(q, k, v, g, beta, cu_seqlens, initial_state, scale, use_qk_l2norm)
    n = len(cu_seqlens) - 1
    hv = v.shape[1]
    qf, kf = _prepare(q, k, hv, scale, use_qk_l2norm)
    vf, gf, bf = v.float(), g.float(), beta.float()
    lens = [cu_seqlens[i + 1] - cu_seqlens[i] for i in range(n)]
    state0 = initial_state.float()
    if n and all(length == 1 for length in lens) and backend != "chunked":
        # decode batch: one recurrent step for all sequences and heads at once
        o, s = recurrent_delta_rule(_rows(qf), _rows(kf), _rows(vf), gf.reshape(-1, 1), bf.reshape(-1, 1),
                                    state0.reshape(n * hv, *state0.shape[2:]))
        return o.reshape(n, hv, -1).to(v.dtype), s.reshape(state0.shape)
    out = v.new_empty((q.shape[0], hv, v.shape[-1]))
    finals = []
    for i in range(n):
        a, e = cu_seqlens[i], cu_seqlens[i + 1]
        use_chunk = backend == "chunked" or (backend != "recurrent" and e - a > SHORT_SEQ)
        fn = chunked_delta_rule if use_chunk else recurrent_delta_rule
        o, s = fn(*(x[a:e].transpose(0, 1) for x in (qf, kf, vf)), gf[a:e].t(), bf[a:e].t(), state0[i])
        out[a:e] = o.transpose(0, 1).to(v.dtype)
        finals.append(s)
    final = torch.stack(finals) if finals else state0.clone()
    return out, final


def _rows(x: torch.Tensor) -> torch.Tensor:
    """[N, HV, D] (one token per sequence) -> [N*HV, 1, D]."""
    return x.reshape(-1, 1, x.shape[-1])


def _fla_gated_delta_rule(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor, beta: torch.Tensor,
                          cu_seqlens: Sequence[int], initial_state: torch.Tensor, scale: float,
                          use_qk_l2norm: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """flash-linear-attention on CUDA: bf16 q/k/v/beta, fp32 g and state, batch 1 with cu_seqlens."""
    chunk_fn, recurrent_fn = _fla_ops()  # type: ignore[misc]
    hv = v.shape[1]
    rep = hv // q.shape[1]
    if rep > 1:  # repeat key heads: not every fla version takes fewer q/k heads than v heads
        q, k = q.repeat_interleave(rep, dim=1), k.repeat_interleave(rep, dim=1)
    n = len(cu_seqlens) - 1
    if n > 0 and cu_seqlens[-1] == n:
        # decode: a batch of N one-token sequences, no cu_seqlens tensor (a host-to-device copy would
        # break CUDA-graph capture of the decode step)
        args = [x.to(torch.bfloat16).unsqueeze(1) for x in (q, k, v)]
        o, final = recurrent_fn(*args, g=g.float().unsqueeze(1), beta=beta.to(torch.bfloat16).unsqueeze(1),
                                scale=scale, initial_state=initial_state.float().contiguous(), output_final_state=True,
                                use_qk_l2norm_in_kernel=use_qk_l2norm)
        return o[:, 0].to(v.dtype), final.float()
    cu = torch.tensor(list(cu_seqlens), dtype=torch.long, device=q.device)
    args = [x.to(torch.bfloat16).unsqueeze(0) for x in (q, k, v)]
    o, final = chunk_fn(*args, g=g.float().unsqueeze(0), beta=beta.to(torch.bfloat16).unsqueeze(0), scale=scale,
                        initial_state=initial_state.float().contiguous(), output_final_state=True, cu_seqlens=cu,
                        use_qk_l2norm_in_kernel=use_qk_l2norm)
    return o[0].to(v.dtype), final.float()
