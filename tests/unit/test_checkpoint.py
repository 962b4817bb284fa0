"""Checkpoint reading and strict loading: every failure is one clear error that names the culprit."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

from awqserve.errors import ModelLoadError, UnsupportedError
from awqserve.loader.checkpoint import CheckpointReader
from awqserve.loader.load_model import load_model


def _tiny_llama() -> transformers.LlamaForCausalLM:
    config = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config).float().eval()


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tiny")
    _tiny_llama().save_pretrained(path, safe_serialization=True)
    return path


@pytest.fixture(scope="module")
def sharded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sharded")
    _tiny_llama().save_pretrained(path, safe_serialization=True, max_shard_size="20KB")
    assert (path / "model.safetensors.index.json").exists()
    return path


@pytest.fixture()
def work(saved: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny checkpoint that a test may damage."""
    return Path(shutil.copytree(saved, tmp_path / "model"))


def _rewrite(path: Path, edit) -> None:
    tensors = load_file(path / "model.safetensors")
    edit(tensors)
    save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})


def test_loads_and_consumes_everything(saved: Path) -> None:
    model = load_model(saved)
    assert model.quant_info.format == "float"


def test_sharded_checkpoint_loads_like_single_file(saved: Path, sharded: Path) -> None:
    reader = CheckpointReader(sharded)
    assert len(reader.files) > 1
    assert sorted(reader.keys()) == sorted(CheckpointReader(saved).keys())
    a, b = load_model(saved), load_model(sharded)
    down_a, down_b = a.model.layers[1].mlp.down_proj, b.model.layers[1].mlp.down_proj
    torch.testing.assert_close(down_a.kernel.weight, down_b.kernel.weight)


def test_header_info_reads_no_data(saved: Path) -> None:
    reader = CheckpointReader(saved)
    info = reader.header_info()
    assert info["model.embed_tokens.weight"] == ("F32", (64, 32))
    assert reader.unconsumed() == reader.keys()  # nothing was read
    reader.get("model.norm.weight")
    assert "model.norm.weight" not in reader.unconsumed()


def test_truncated_file_names_the_file(work: Path) -> None:
    f = work / "model.safetensors"
    f.write_bytes(f.read_bytes()[:-100])
    with pytest.raises(ModelLoadError, match=r"model\.safetensors is truncated"):
        load_model(work)


def test_garbage_header_names_the_file(work: Path) -> None:
    (work / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    with pytest.raises(ModelLoadError, match=r"model\.safetensors is corrupt"):
        load_model(work)


def test_missing_shard_names_it(sharded: Path, tmp_path: Path) -> None:
    work = Path(shutil.copytree(sharded, tmp_path / "model"))
    shard = sorted(work.glob("model-*.safetensors"))[-1]
    shard.unlink()
    with pytest.raises(ModelLoadError, match=f"missing.*{shard.name}"):
        load_model(work)


def test_missing_weights_file(work: Path) -> None:
    (work / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="no safetensors weights"):
        load_model(work)


def test_missing_tensor_is_named(work: Path) -> None:
    _rewrite(work, lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))
    with pytest.raises(ModelLoadError, match=r"lacks 1 tensor.*model\.layers\.1\.mlp\.up_proj\.weight"):
        load_model(work)


def test_reader_get_of_missing_tensor_names_it_and_the_dir(saved: Path) -> None:
    with pytest.raises(ModelLoadError, match=f"'nope.weight' is missing .* {saved}"):
        CheckpointReader(saved).get("nope.weight")


def test_leftover_tensor_is_named(work: Path) -> None:
    _rewrite(work, lambda t: t.update({"model.layers.0.mlp.extra.weight": torch.zeros(3)}))
    message = r"1 tensor\(s\) that LlamaForCausalLM does not use: model\.layers\.0\.mlp\.extra"
    with pytest.raises(ModelLoadError, match=message):
        load_model(work)


def test_ignored_keys_are_allowed(work: Path) -> None:
    _rewrite(work, lambda t: t.update({"model.layers.0.self_attn.rotary_emb.inv_freq": torch.zeros(4)}))
    load_model(work)


def test_misshaped_plain_tensor_names_shapes(work: Path) -> None:
    _rewrite(work, lambda t: t.update({"model.norm.weight": torch.ones(31)}))
    with pytest.raises(ModelLoadError, match=r"'model\.norm\.weight' has shape \[31\], the model expects \[32\]"):
        load_model(work)


def test_misshaped_linear_names_shapes(work: Path) -> None:
    _rewrite(work, lambda t: t.update({"model.layers.0.self_attn.k_proj.weight": torch.ones(8, 32)}))
    with pytest.raises(ModelLoadError, match=r"k_proj' has shape \[8, 32\], the model expects \[16, 32\]"):
        load_model(work)


def test_unknown_architecture_lists_supported(work: Path) -> None:
    cfg = json.loads((work / "config.json").read_text())
    cfg["architectures"] = ["FooForCausalLM"]
    (work / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UnsupportedError, match=r"'FooForCausalLM'.*supported: .*LlamaForCausalLM"):
        load_model(work)


def test_unknown_rope_type_is_refused(work: Path) -> None:
    cfg = json.loads((work / "config.json").read_text())
    cfg["rope_parameters"] = {"rope_type": "longrope", "rope_theta": 10000.0}
    (work / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UnsupportedError, match="rope type 'longrope'"):
        load_model(work)
