"""The demo model's sampling defaults: written into generation_config.json (also into builds made
before they existed, without a rebuild) and applied by the server only where a request sets nothing."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from awqserve.entrypoints.openai.protocol import ChatCompletionRequest
from awqserve.entrypoints.openai.sampling import build_params
from awqserve.tools.demo_model import DEMO_SAMPLING, add_sampling_defaults, ensure_demo_model

OLD_GENERATION = {"bos_token_id": 1, "eos_token_id": [2, 0], "pad_token_id": 2}


def _old_build(root: Path) -> Path:
    """A finished demo build from before the defaults (ensure_demo_model only checks these files)."""
    d = root / "demo"
    d.mkdir()
    (d / "config.json").write_text("{}")
    (d / "model.safetensors").write_bytes(b"")
    (d / "generation_config.json").write_text(json.dumps(OLD_GENERATION))
    return d


def test_an_old_build_gets_the_defaults_without_a_rebuild(tmp_path: Path) -> None:
    d = _old_build(tmp_path)
    assert ensure_demo_model(d) == d
    gen = json.loads((d / "generation_config.json").read_text())
    assert gen == {**OLD_GENERATION, **DEMO_SAMPLING}
    assert gen["temperature"] == 0.2 and gen["top_p"] == 0.9
    assert [p.name for p in d.iterdir() if p.name.startswith(".")] == []  # no temporary file left


def test_values_already_there_are_kept(tmp_path: Path) -> None:
    d = _old_build(tmp_path)
    (d / "generation_config.json").write_text(json.dumps({**OLD_GENERATION, "temperature": 0.7}))
    add_sampling_defaults(d)
    gen = json.loads((d / "generation_config.json").read_text())
    assert gen["temperature"] == 0.7 and gen["top_p"] == 0.9


def test_a_corrupt_file_is_left_alone(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    d = _old_build(tmp_path)
    (d / "generation_config.json").write_text("{not json")
    add_sampling_defaults(d)
    assert (d / "generation_config.json").read_text() == "{not json" and "cannot add sampling defaults" in caplog.text


def _params(**fields: object):  # type: ignore[no-untyped-def]
    req = ChatCompletionRequest.model_validate({"messages": [{"role": "user", "content": "hi"}], **fields})
    return build_params(req, generation={**OLD_GENERATION, **DEMO_SAMPLING}, max_tokens=None, logprobs=None)


def test_defaults_apply_where_the_request_sets_nothing() -> None:
    p = _params()
    assert (p.temperature, p.top_p) == (0.2, 0.9)
    p = _params(temperature=0.0)
    assert (p.temperature, p.top_p) == (0.0, 0.9)
    p = _params(temperature=1.0, top_p=1.0)
    assert (p.temperature, p.top_p) == (1.0, 1.0)
