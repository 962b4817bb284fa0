"""Request fields → engine `SamplingParams` (the 400s for values SamplingParams refuses).

Unset sampling fields fall back to the model's generation_config.json (as vLLM does), then to
OpenAI's defaults. `max_tokens` stays None when the client sent none: the engine gives the request
the rest of the context. Limits (context length, vocabulary, --max-logprobs) are the engine's
(`EngineClient.check_request`, mapped in serving_base).
"""
from __future__ import annotations

from typing import Any, Mapping

from awqserve.engine.sampling_params import SamplingParams
from awqserve.entrypoints.openai.errors import bad_request
from awqserve.entrypoints.openai.protocol import SamplingRequest
from awqserve.structured import GrammarSpec

_GEN_DEFAULTS = {"temperature": 1.0, "top_p": 1.0, "top_k": 0, "min_p": 0.0, "repetition_penalty": 1.0}


def _defaults(generation: Mapping[str, Any]) -> dict[str, float]:
    out: dict[str, float] = dict(_GEN_DEFAULTS)
    for key in out:
        value = generation.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = value
    return out


def build_params(req: SamplingRequest, *, generation: Mapping[str, Any], max_tokens: int | None,
                 logprobs: int | None, prompt_logprobs: int | None = None,
                 grammar: GrammarSpec | None = None) -> SamplingParams:
    """SamplingParams for one prompt. ValueError from SamplingParams becomes a 400 naming the field."""
    gen = _defaults(generation)
    stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])

    def pick(name: str) -> float:
        value = getattr(req, name)
        return float(value) if value is not None else gen[name]

    try:
        return SamplingParams(
            n=req.n, temperature=pick("temperature"), top_p=max(pick("top_p"), 1e-6),
            top_k=int(pick("top_k")), min_p=pick("min_p"),
            presence_penalty=req.presence_penalty or 0.0, frequency_penalty=req.frequency_penalty or 0.0,
            repetition_penalty=pick("repetition_penalty"),
            logit_bias={int(k): float(v) for k, v in req.logit_bias.items()} if req.logit_bias else None,
            seed=req.seed, stop=stop, stop_token_ids=list(req.stop_token_ids or []), ignore_eos=req.ignore_eos,
            max_tokens=max_tokens, min_tokens=req.min_tokens, logprobs=logprobs, prompt_logprobs=prompt_logprobs,
            skip_special_tokens=req.skip_special_tokens, include_stop_str_in_output=req.include_stop_str_in_output,
            grammar=grammar)
    except ValueError as e:
        field = str(e).split(" ", 1)[0]
        raise bad_request(str(e), param=field, code="invalid_value") from None
