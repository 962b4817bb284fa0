"""GET /v1/models, GET /v1/models/{id} (with quantization metadata), POST /tokenize, POST /detokenize."""
from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from awqserve.entrypoints.openai.errors import bad_request
from awqserve.entrypoints.openai.protocol import DetokenizeRequest, TokenizeRequest, parse_body
from awqserve.entrypoints.openai.state import AppState, get_state
from awqserve.entrypoints.openai.tokenization import messages_to_dicts


def quantization(state: AppState) -> dict[str, Any]:
    q = state.info.quant_info
    return q.as_dict() if q is not None else {"method": "none", "format": "float", "bits": None,
                                               "group_size": None, "symmetric": None}


def model_card(state: AppState, name: str) -> dict[str, Any]:
    info = state.info
    return {"id": name, "object": "model", "created": int(state.started_wall), "owned_by": "awqserve",
            "root": str(info.model_path or name), "parent": None,
            "max_model_len": info.max_model_len, "quantization": quantization(state)}


async def list_models(request: Request) -> Response:
    state = get_state(request)
    state.require_engine()
    return JSONResponse({"object": "list", "data": [model_card(state, n) for n in state.served_names]})


async def retrieve_model(request: Request) -> Response:
    state = get_state(request)
    state.require_engine()
    name = state.resolve_model(request.path_params["model_id"])
    return JSONResponse(model_card(state, name))


async def tokenize(request: Request) -> Response:
    state = get_state(request)
    req = parse_body(await request.body(), TokenizeRequest)
    tok = state.require_tokenizer()
    state.resolve_model(req.model)
    if (req.prompt is None) == (req.messages is None):
        raise bad_request("Send exactly one of 'prompt' or 'messages'.", param="prompt", code="invalid_value")
    if req.messages is not None:
        ids = tok.chat_prompt(messages_to_dicts(req.messages), req.add_generation_prompt)
    else:
        add_special = True if req.add_special_tokens is None else req.add_special_tokens
        ids = tok.encode(req.prompt or "", add_special_tokens=add_special)
    body: dict[str, Any] = {"count": len(ids), "max_model_len": state.info.max_model_len, "tokens": ids,
                            "token_strs": [tok.token_str(t) for t in ids] if req.return_token_strs else None}
    return JSONResponse(body)


async def detokenize(request: Request) -> Response:
    state = get_state(request)
    req = parse_body(await request.body(), DetokenizeRequest)
    tok = state.require_tokenizer()
    state.resolve_model(req.model)
    vocab = state.info.vocab_size
    bad = [t for t in req.tokens if not 0 <= t < vocab]
    if bad:
        raise bad_request(f"token id {bad[0]} is outside the vocabulary (0..{vocab - 1}).",
                          param="tokens", code="invalid_value")
    return JSONResponse({"prompt": tok.decode(req.tokens)})
