"""In-process engines for the single-stream and prefill workloads, behind one tiny interface:
`generate(prompt_ids, max_new) -> Timing`. awqserve's offline `LLM`, llama-cpp-python's `Llama`, and
transformers `generate` on the dequantized GGUF. Heavy imports happen inside the constructors, so a
missing system raises `Unavailable` (reported as "n/a") instead of breaking the run.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol



class Unavailable(RuntimeError):
    """A system (or its model file) is not present on this machine; the message says why/how to fix."""

@dataclass
class Timing:
    """One generation: seconds from the call to the first token, from first to last token, tokens out."""

    ttft_s: float
    decode_s: float
    n_out: int

    @property
    def decode_tok_s(self) -> float:
        # n_out tokens need n_out - 1 decode steps after the prefill that produced the first one
        return (self.n_out - 1) / self.decode_s if self.n_out > 1 and self.decode_s > 0 else float("nan")


class Engine(Protocol):
    name: str

    def generate(self, prompt_ids: list[int], max_new: int) -> Timing: ...


class LlamaCppEngine:
    """llama-cpp-python's `Llama`; `generate()` yields tokens without stopping at EOS (= ignore EOS)."""

    name = "llama.cpp (llama-cpp-python)"

    def __init__(self, gguf: Path, n_ctx: int, threads: int) -> None:
        try:
            import llama_cpp
        except ImportError as e:
            raise Unavailable(f"llama-cpp-python not importable: {e}") from e
        self.llm = llama_cpp.Llama(model_path=str(gguf), n_ctx=n_ctx, n_threads=threads,
                                   n_threads_batch=threads, verbose=False)

    def generate(self, prompt_ids: list[int], max_new: int) -> Timing:
        self.llm.reset()  # no reuse of the previous prompt's KV: every call pays its full prefill
        t0 = time.perf_counter()
        first = last = t0
        n = 0
        for _tok in self.llm.generate(prompt_ids, temp=0.0, top_k=1, reset=True):
            last = time.perf_counter()
            n += 1
            if n == 1:
                first = last
            if n >= max_new:
                break
        return Timing(first - t0, last - first, n)


class TransformersEngine:
    """transformers `generate` on the GGUF dequantized to fp32, greedy, exactly `max_new` tokens."""

    name = "transformers (fp32, dequantized GGUF)"

    def __init__(self, gguf: Path, threads: int) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        torch.set_num_threads(threads)
        self.torch = torch
        try:
            self.model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                              dtype=torch.float32)
            self.loader = "AutoModelForCausalLM.from_pretrained(gguf_file=...)"
        except ValueError as e:  # transformers' GGUF loader insists on `accelerate`
            if "accelerate" not in str(e):
                raise
            # same weights, same transformers LlamaForCausalLM: the GGUF dequantized by the gguf package
            from awqserve.tools.demo_model import load_demo_float_model

            self.model = load_demo_float_model(gguf)[0]
            self.loader = "LlamaForCausalLM via awqserve.tools.demo_model (accelerate not installed)"
        self.model.eval()

    def generate(self, prompt_ids: list[int], max_new: int) -> Timing:
        from transformers.generation.streamers import BaseStreamer

        stamps: list[float] = []

        class _Clock(BaseStreamer):
            def __init__(self) -> None:
                self.seen_prompt = False

            def put(self, value: Any) -> None:  # first call is the prompt itself
                if self.seen_prompt:
                    stamps.append(time.perf_counter())
                self.seen_prompt = True

            def end(self) -> None:
                pass

        ids = self.torch.tensor([prompt_ids])
        t0 = time.perf_counter()
        with self.torch.inference_mode():
            out = self.model.generate(ids, attention_mask=self.torch.ones_like(ids), do_sample=False,
                                      max_new_tokens=max_new, min_new_tokens=max_new, streamer=_Clock(),
                                      pad_token_id=2)
        n = int(out.shape[1]) - len(prompt_ids)
        first = stamps[0] if stamps else time.perf_counter()
        return Timing(first - t0, (stamps[-1] - first) if stamps else 0.0, n)


class AwqserveEngine:
    """awqserve's offline `LLM` (vLLM's shape). Times come from the engine's per-request metrics."""

    name = "awqserve (offline LLM)"

    def __init__(self, model: str | None, threads: int) -> None:
        try:
            from awqserve import LLM, SamplingParams
        except (ImportError, AttributeError) as e:
            raise Unavailable(f"awqserve offline API not importable: {e}") from e
        self.SamplingParams = SamplingParams
        # every call pays its whole prefill, as on llama.cpp (reset per call): no prefix-cache hits
        # between repetitions of the same prompt
        self.llm = LLM(model=model, enable_prefix_caching=False, num_threads=threads)

    def prompt(self, prompt_ids: list[int]) -> Any:
        return list(prompt_ids)  # awqserve takes token-id lists directly (vLLM would want TokensPrompt)

    def params(self, max_new: int) -> Any:
        return self.SamplingParams(temperature=0, max_tokens=max_new, ignore_eos=True)

    def run(self, prompts: list[Any], params: Any) -> list[Any]:
        import inspect

        quiet = {"use_tqdm": False} if "use_tqdm" in inspect.signature(self.llm.generate).parameters else {}
        return self.llm.generate(prompts, params, **quiet)

    def generate(self, prompt_ids: list[int], max_new: int) -> Timing:
        t0 = time.monotonic()
        out = self.run([self.prompt(prompt_ids)], self.params(max_new))[0]
        t_end = time.monotonic()
        n = len(out.outputs[0].token_ids)
        m = getattr(out, "metrics", None)
        if m is not None and m.first_token_time is not None and m.last_token_time is not None:
            return Timing(m.first_token_time - min(m.arrival_time, m.first_token_time),
                          m.last_token_time - m.first_token_time, n)
        if max_new == 1:
            return Timing(t_end - t0, 0.0, n)
        ttft = self.generate(prompt_ids, 1).ttft_s  # no metrics: infer decode time from a 1-token run
        return Timing(ttft, max(t_end - t0 - ttft, 1e-9), n)


# ---------------------------------------------------------------- HTTP servers
