"""JSON schemas of what the server answers (bodies are built as dicts, so these are written out here).

They describe every key the server always sends (`required`) and the optional ones it may add; objects
stay open (`additionalProperties` unset) because OpenAI adds fields over time and so may we. The
request side is generated from the pydantic models (openapi.py). tests/unit/test_openapi.py validates
real responses against these schemas, so a change to a body that breaks them fails there.
"""
from __future__ import annotations

from typing import Any

Schema = dict[str, Any]

STR: Schema = {"type": "string"}
INT: Schema = {"type": "integer"}
NUM: Schema = {"type": "number"}
BOOL: Schema = {"type": "boolean"}


def nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


def const(value: str) -> Schema:
    return {"type": "string", "enum": [value]}


def arr(items: Schema) -> Schema:
    return {"type": "array", "items": items}


def obj(props: dict[str, Schema], required: list[str] | None = None) -> Schema:
    """An object whose listed properties are all required unless `required` says which."""
    return {"type": "object", "properties": props, "required": list(props) if required is None else required}


ERROR = obj({"error": obj({"message": STR, "type": STR, "param": nullable(STR), "code": nullable(STR)})})
USAGE = obj({"prompt_tokens": INT, "completion_tokens": INT, "total_tokens": INT})
TOOL_CALL = obj({"id": STR, "type": const("function"), "function": obj({"name": STR, "arguments": STR})})
TOP_LOGPROB = obj({"token": STR, "logprob": NUM, "bytes": nullable(arr(INT))})
TOKEN_LOGPROB = obj({**TOP_LOGPROB["properties"], "top_logprobs": arr(TOP_LOGPROB)})
CHAT_LOGPROBS = nullable(obj({"content": nullable(arr(TOKEN_LOGPROB)), "refusal": nullable(arr(TOKEN_LOGPROB))},
                             required=["content"]))
FINISH = {"type": "string", "enum": ["stop", "length", "tool_calls", "content_filter"]}
_HEAD = {"id": STR, "created": INT, "model": STR, "system_fingerprint": STR}

CHAT_MESSAGE = obj({"role": const("assistant"), "content": nullable(STR), "refusal": nullable(STR),
                    "tool_calls": arr(TOOL_CALL), "reasoning_content": nullable(STR), "reasoning": nullable(STR)},
                   required=["role", "content"])
CHAT_COMPLETION = obj({
    **_HEAD, "object": const("chat.completion"), "usage": USAGE,
    "choices": arr(obj({"index": INT, "message": CHAT_MESSAGE, "logprobs": CHAT_LOGPROBS, "finish_reason": FINISH})),
})
CHAT_CHUNK = obj({
    **_HEAD, "object": const("chat.completion.chunk"), "usage": nullable(USAGE),
    "choices": arr(obj({"index": INT, "delta": {"type": "object"}, "logprobs": CHAT_LOGPROBS,
                        "finish_reason": nullable(FINISH)}, required=["index", "delta", "finish_reason"])),
}, required=["id", "object", "created", "model", "choices"])

LEGACY_LOGPROBS = nullable(obj({"tokens": arr(STR), "token_logprobs": arr(nullable(NUM)),
                                "top_logprobs": arr(nullable({"type": "object"})), "text_offset": arr(INT)}))
COMPLETION = obj({
    **_HEAD, "object": const("text_completion"), "usage": USAGE,
    "choices": arr(obj({"index": INT, "text": STR, "logprobs": LEGACY_LOGPROBS, "finish_reason": FINISH})),
})

QUANT = obj({"method": STR, "format": STR, "bits": nullable(INT), "group_size": nullable(INT),
             "symmetric": nullable(BOOL)}, required=["method"])
MODEL = obj({"id": STR, "object": const("model"), "created": INT, "owned_by": STR, "max_model_len": INT,
             "quantization": QUANT}, required=["id", "object", "created", "owned_by"])
MODEL_LIST = obj({"object": const("list"), "data": arr(MODEL)})

TOKENIZE = obj({"count": INT, "max_model_len": INT, "tokens": arr(INT), "token_strs": nullable(arr(STR))},
               required=["count", "max_model_len", "tokens"])
DETOKENIZE = obj({"prompt": STR})
HEALTH = obj({"status": STR}, required=["status"])
VERSION = obj({"version": STR})

RESPONSE = obj({
    "id": STR, "object": const("response"), "created_at": INT, "model": STR,
    "status": {"type": "string", "enum": ["completed", "incomplete", "in_progress", "failed"]},
    "output": arr({"type": "object", "properties": {"type": STR}, "required": ["type"]}),
    "usage": nullable({"type": "object"}),
}, required=["id", "object", "created_at", "model", "status", "output"])
RESPONSE_DELETED = obj({"id": STR, "object": const("response"), "deleted": BOOL})

SSE_NOTE = ("With `stream: true` the body is text/event-stream: `data: <chunk JSON>` events ending with "
            "`data: [DONE]`; an error after the first byte arrives as `data: {\"error\": ...}`.")

# the names the document gives them (components/schemas)
RESPONSE_SCHEMAS: dict[str, Schema] = {
    "ChatCompletion": CHAT_COMPLETION, "ChatCompletionChunk": CHAT_CHUNK, "Completion": COMPLETION,
    "Model": MODEL, "ModelList": MODEL_LIST, "TokenizeResponse": TOKENIZE, "DetokenizeResponse": DETOKENIZE,
    "Health": HEALTH, "Version": VERSION, "Response": RESPONSE, "ResponseDeleted": RESPONSE_DELETED,
}
