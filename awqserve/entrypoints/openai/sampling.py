"""Request fields → engine `SamplingParams`, with the semantic checks that answer 400.

Unset sampling fields fall back to the model's generation_config.json (as vLLM does), then to
OpenAI's defaults. `max_tokens` defaults to the remaining context; prompts that do not fit answer 400
with "maximum context length is N tokens" and a hint.
"""
from __future__ import annotations

from typing import Any

from awqserve.engine.sampling_params import SamplingParams
from awqserve.entrypoints.openai.errors import bad_request, context_length_exceeded
from awqserve.entrypoints.openai.protocol import _SamplingRequest

_GEN_DEFAULTS = {"temperature": 1.0, "top_p": 1.0, "top_k": 0, "min_p": 0.0, "repetition_penalty": 1.0}


def resolve_max_tokens(max_len: int, prompt_len: int, requested: int | None, param: str) -> int:
    """The completion budget for one prompt; 400 if the prompt (plus `requested`) exceeds the context."""
    if prompt_len >= max_len:
        raise context_length_exceeded(max_len, prompt_len, requested, param)
    if requested is None:
        return max_len - prompt_len
    if prompt_len + requested > max_len:
        raise context_length_exceeded(max_len, prompt_len, requested, param)
    return requested


def _defaults(generation: Any) -> dict[str, Any]:
    out = dict(_GEN_DEFAULTS)
    for key in out:
        value = generation.get(key) if generation is not None else None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = value
    return out


def _logit_bias(bias: dict[str, float] | None, vocab_size: int) -> dict[int, float] | None:
    if not bias:
        return None
    out = {int(k): float(v) for k, v in bias.items()}
    bad = [k for k in out if not 0 <= k < vocab_size]
    if bad:
        raise bad_request(f"logit_bias refers to token id {bad[0]}, outside the vocabulary (0..{vocab_size - 1}).",
                          param="logit_bias", code="invalid_value")
    return out


def check_logprobs(k: int | None, max_logprobs: int, param: str) -> None:
    if k is not None and k > max_logprobs:
        raise bad_request(f"{param}={k} exceeds this server's limit of {max_logprobs} (--max-logprobs).",
                          param=param, code="invalid_value")


def build_params(req: _SamplingRequest, *, engine: Any, vocab_size: int, max_tokens: int,
                 logprobs: int | None, prompt_logprobs: int | None = None) -> SamplingParams:
    """SamplingParams for one prompt. ValueError from SamplingParams becomes a 400 naming the field."""
    gen = _defaults(getattr(engine.model_config, "generation", None))
    stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
    pick = lambda name: getattr(req, name) if getattr(req, name) is not None else gen[name]  # noqa: E731
    try:
        return SamplingParams(
            n=req.n, temperature=float(pick("temperature")), top_p=max(float(pick("top_p")), 1e-6),
            top_k=int(pick("top_k")), min_p=float(pick("min_p")),
            presence_penalty=req.presence_penalty or 0.0, frequency_penalty=req.frequency_penalty or 0.0,
            repetition_penalty=float(pick("repetition_penalty")),
            logit_bias=_logit_bias(req.logit_bias, vocab_size), seed=req.seed, stop=stop,
            stop_token_ids=list(req.stop_token_ids or []), ignore_eos=req.ignore_eos, max_tokens=max_tokens,
            min_tokens=req.min_tokens, logprobs=logprobs, prompt_logprobs=prompt_logprobs,
            skip_special_tokens=req.skip_special_tokens,
            include_stop_str_in_output=req.include_stop_str_in_output)
    except ValueError as e:
        field = str(e).split(" ", 1)[0]
        raise bad_request(str(e), param=field, code="invalid_value") from None
