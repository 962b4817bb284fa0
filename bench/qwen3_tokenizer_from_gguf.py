"""Rebuild a Qwen3-layout tokenizer from llama.cpp's vocab-only `ggml-vocab-qwen2.gguf`.

No model hub is reachable here, so the grammar benchmark gets its 151k-token vocabulary this way.
The llama-cpp-python sdist vendors llama.cpp, and with it `models/ggml-vocab-qwen2.gguf`:

    pip download --no-deps --no-binary :all: llama-cpp-python==0.3.36 -d /tmp/lcpp
    tar xzf /tmp/lcpp/llama_cpp_python-0.3.36.tar.gz -C /tmp/lcpp --wildcards '*/ggml-vocab-qwen2.gguf'
    python bench/qwen3_tokenizer_from_gguf.py \
        /tmp/lcpp/llama_cpp_python-0.3.36/vendor/llama.cpp/models/ggml-vocab-qwen2.gguf /tmp/qwen3_tok

Qwen2, Qwen2.5 and Qwen3 share one byte-level BPE (151,643 regular tokens, same merges, same
pre-tokenizer regex). They differ in the added tokens after id 151,643: the GGUF carries only the
first three and pads the rest to 151,936 with "[PADn]" entries. This script drops the padding and
writes Qwen3's 26 added tokens (ids 151,643..151,668, among them `<tool_call>` = 151,657, which
Qwen3 marks non-special) and its NFC normalizer, so the result tokenizes like Qwen3's own
tokenizer.json (151,669 tokens; the model's logits vocab stays 151,936). The output is for
benchmarks only and is not committed.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

FIRST_ADDED_ID = 151643

# Qwen3's added tokens in id order from 151643, with their "special" flag in its tokenizer.json.
QWEN3_ADDED: list[tuple[str, bool]] = [
    ("<|endoftext|>", True), ("<|im_start|>", True), ("<|im_end|>", True),
    ("<|object_ref_start|>", True), ("<|object_ref_end|>", True), ("<|box_start|>", True),
    ("<|box_end|>", True), ("<|quad_start|>", True), ("<|quad_end|>", True),
    ("<|vision_start|>", True), ("<|vision_end|>", True), ("<|vision_pad|>", True),
    ("<|image_pad|>", True), ("<|video_pad|>", True), ("<tool_call>", False),
    ("</tool_call>", False), ("<|fim_prefix|>", False), ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False), ("<|fim_pad|>", False), ("<|repo_name|>", False),
    ("<|file_sep|>", False), ("<tool_response>", False), ("</tool_response>", False),
    ("<think>", False), ("</think>", False),
]


def _added_entry(token_id: int, content: str, special: bool) -> dict[str, object]:
    return {"id": token_id, "content": content, "single_word": False, "lstrip": False,
            "rstrip": False, "normalized": False, "special": special}


def rebuild(tokenizer_json: dict[str, object]) -> dict[str, object]:
    """Return a copy of a GGUF-derived Qwen2 tokenizer.json rewritten to Qwen3's layout."""
    out = dict(tokenizer_json)
    model = dict(out["model"])  # type: ignore[arg-type]
    model["vocab"] = {t: i for t, i in model["vocab"].items() if i < FIRST_ADDED_ID}
    out["model"] = model
    out["added_tokens"] = [_added_entry(FIRST_ADDED_ID + k, c, s) for k, (c, s) in enumerate(QWEN3_ADDED)]
    out["normalizer"] = {"type": "NFC"}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("gguf", type=Path, help="path to ggml-vocab-qwen2.gguf")
    ap.add_argument("out", type=Path, help="output directory (tokenizer.json + tokenizer_config.json)")
    args = ap.parse_args()
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    raw = AutoTokenizer.from_pretrained(str(args.gguf.parent), gguf_file=args.gguf.name)
    data = json.loads(raw.backend_tokenizer.to_str())
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "tokenizer.json").write_text(json.dumps(rebuild(data), ensure_ascii=False))
    tok = PreTrainedTokenizerFast(tokenizer_file=str(args.out / "tokenizer.json"),
                                  eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tok.save_pretrained(args.out)
    print(f"wrote {args.out}: {len(tok)} tokens, <tool_call> = {tok.convert_tokens_to_ids('<tool_call>')}")


if __name__ == "__main__":
    main()
