"""Per-request sampling parameters, in vLLM's shape (`from awqserve import SamplingParams`)."""
from __future__ import annotations

from dataclasses import dataclass, field

from awqserve.structured.spec import GrammarSpec

SEED_MIN, SEED_MAX = -(1 << 63), (1 << 63) - 1  # OpenAI's int64; torch generators take seed + sample index


@dataclass
class SamplingParams:
    """How to sample one request. Validated on construction (ValueError names the field).

    temperature 0 means greedy. `max_tokens=None` means "up to the context limit" (the engine
    fills it in). `logprobs=k` returns the sampled token's logprob plus the top-k alternatives
    per generated token; `prompt_logprobs=k` does the same for prompt tokens (for `echo`).
    `stop` strings are never included in the output text; `stop_token_ids` end generation too
    (the token itself is not decoded into the text), as does EOS unless `ignore_eos`. `grammar`
    constrains every sampled token (a JSON schema, regex, choice, grammar or tool calls); the request
    then also stops when the grammar is complete. Logprobs stay those of the unconstrained model.
    `seed` is any 64-bit signed integer (OpenAI's `int64`); -1 means "no seed" (fresh randomness per
    request, llama.cpp's convention) and is stored as None.
    """

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 or -1: disabled
    min_p: float = 0.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    logit_bias: dict[int, float] | None = None
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    ignore_eos: bool = False
    max_tokens: int | None = 16
    min_tokens: int = 0
    logprobs: int | None = None
    prompt_logprobs: int | None = None
    skip_special_tokens: bool = True
    include_stop_str_in_output: bool = False
    grammar: GrammarSpec | None = None  # constrained decoding (engine/structured_output.py)

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        self.stop = [s for s in self.stop if s]
        if self.top_k == -1:
            self.top_k = 0
        if self.seed == -1:
            self.seed = None
        checks = [
            (self.n >= 1, "n", "must be >= 1"),
            (self.seed is None or SEED_MIN <= self.seed <= SEED_MAX, "seed",
             f"must be a 64-bit signed integer ({SEED_MIN}..{SEED_MAX}; -1 for none)"),
            (self.temperature >= 0.0, "temperature", "must be >= 0"),
            (0.0 < self.top_p <= 1.0, "top_p", "must be in (0, 1]"),
            (self.top_k >= 0, "top_k", "must be -1, 0 or positive"),
            (0.0 <= self.min_p <= 1.0, "min_p", "must be in [0, 1]"),
            (-2.0 <= self.presence_penalty <= 2.0, "presence_penalty", "must be in [-2, 2]"),
            (-2.0 <= self.frequency_penalty <= 2.0, "frequency_penalty", "must be in [-2, 2]"),
            (self.repetition_penalty > 0.0, "repetition_penalty", "must be > 0"),
            (self.max_tokens is None or self.max_tokens >= 1, "max_tokens", "must be >= 1"),
            (self.min_tokens >= 0, "min_tokens", "must be >= 0"),
            (self.max_tokens is None or self.min_tokens <= self.max_tokens, "min_tokens", "must be <= max_tokens"),
            (self.logprobs is None or self.logprobs >= 0, "logprobs", "must be >= 0"),
            (self.prompt_logprobs is None or self.prompt_logprobs >= 0, "prompt_logprobs", "must be >= 0"),
        ]
        for ok, name, why in checks:
            if not ok:
                raise ValueError(f"{name} {why}, got {getattr(self, name)!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature < 1e-5
