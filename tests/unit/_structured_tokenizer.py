"""A small real byte-level BPE tokenizer for the structured-output tests (trained in memory, ~20 ms).

Two flavours, as the two real cases we serve: `qwen_like=True` adds `<tool_call>` / `</tool_call>`
(and `<think>`) as single non-special added tokens, as Qwen3's tokenizer has them; `qwen_like=False`
has no such tokens, so the markers are spelled out in pieces, as with the demo model.
The model's logits vocab (`VOCAB_SIZE`) is padded past the tokenizer, as real checkpoints are.
"""
from __future__ import annotations

import functools
from typing import Any

VOCAB_SIZE = 640  # logits width; the tokenizer has fewer tokens, the rest are padding ids
_CORPUS = [
    '{"name": "Ada", "age": 36, "tags": ["math", "poetry"], "active": true, "score": 9.5}',
    '{"city": "Paris", "unit": "celsius", "query": "museums open on Monday", "max_results": 5}',
    "The weather in Paris is mild today. I'll look that up for you.",
    "positive negative neutral mixed yes no maybe null false true 0123456789",
    'get_weather search_web send_email "arguments": {"to": "bob@example.com"}',
    "[1, 2, 3] {} [] \n\n  \t -12.5e3 \\n \\\" unicode: é ü 世界",
] * 4


@functools.lru_cache(maxsize=None)
def make_tokenizer(qwen_like: bool) -> Any:
    """A `PreTrainedTokenizerFast` with EOS `<|im_end|>` and a ~460-token byte-level BPE vocab."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=520, special_tokens=["<|endoftext|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_CORPUS, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    if qwen_like:
        fast.add_tokens(["<tool_call>", "</tool_call>", "<think>", "</think>"])  # non-special, as Qwen3
    assert len(fast) < VOCAB_SIZE
    return fast


def eos_id(tokenizer: Any) -> int:
    return int(tokenizer.convert_tokens_to_ids("<|im_end|>"))


def encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=False))


def allowed(bitmask: Any, row: int = 0, vocab_size: int = VOCAB_SIZE) -> set[int]:
    """The token ids a bitmask row allows."""
    words = bitmask[row].tolist()
    return {t for t in range(vocab_size) if (words[t // 32] >> (t % 32)) & 1}
