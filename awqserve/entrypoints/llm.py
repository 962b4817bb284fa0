"""Offline batched generation in vLLM's shape: `LLM(model).generate(prompts, params)`.

    from awqserve import LLM, SamplingParams
    llm = LLM()  # the built-in demo model
    outs = llm.generate(["Hello"], SamplingParams(max_tokens=32))
    print(outs[0].outputs[0].text)
"""
from __future__ import annotations

from typing import Any, Sequence

from awqserve.config.engine_config import EngineConfig
from awqserve.engine.llm_engine import LLMEngine
from awqserve.engine.outputs import RequestOutput
from awqserve.engine.sampling_params import SamplingParams
from awqserve.loader.tokenizer import apply_chat_template

Prompt = str | list[int]
Messages = list[dict[str, Any]]


class LLM:
    """Owns an LLMEngine in the calling thread; every call runs the engine until its requests finish."""

    def __init__(self, model: str | None = None, *, chat_template: str | None = None, **engine_kwargs: Any) -> None:
        self.engine = LLMEngine.from_config(EngineConfig(model=model, **engine_kwargs))
        self.chat_template = chat_template
        self._counter = 0

    @property
    def tokenizer(self) -> Any:
        return self.engine.tokenizer

    def generate(self, prompts: Prompt | Sequence[Prompt],
                 sampling_params: SamplingParams | Sequence[SamplingParams] | None = None) -> list[RequestOutput]:
        """Generate for every prompt (text or token ids) as one continuous batch; outputs in prompt order."""
        return self._run([self._encode(p) for p in _prompt_list(prompts)], sampling_params)

    def chat(self, messages: Messages | Sequence[Messages],
             sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
             add_generation_prompt: bool = True) -> list[RequestOutput]:
        """Apply the chat template to one conversation (list of messages) or several, then generate."""
        ids = [apply_chat_template(self.tokenizer, c, add_generation_prompt, chat_template=self.chat_template)
               for c in _conversation_list(messages)]
        return self._run(ids, sampling_params)

    def _encode(self, prompt: Prompt) -> list[int]:
        if isinstance(prompt, str):
            return list(self.tokenizer.encode(prompt))
        return list(prompt)

    def _run(self, prompts: list[list[int]],
             params: SamplingParams | Sequence[SamplingParams] | None) -> list[RequestOutput]:
        if params is None:
            params = SamplingParams()
        per = [params] * len(prompts) if isinstance(params, SamplingParams) else list(params)
        if len(per) != len(prompts):
            raise ValueError("give one SamplingParams, or one per prompt")
        ids = []
        for prompt, p in zip(prompts, per):
            self._counter += 1
            ids.append(f"llm-{self._counter}")
            self.engine.add_request(ids[-1], prompt, p)
        final: dict[str, RequestOutput] = {}
        while self.engine.has_unfinished():
            for out in self.engine.step():
                if out.finished:
                    final[out.request_id] = out
        for rid in ids:
            error = final[rid].error
            if error is not None:
                raise error
        return [final[rid] for rid in ids]


def _prompt_list(prompts: Prompt | Sequence[Prompt]) -> list[Prompt]:
    """One prompt (a string, or a list of token ids) or several."""
    if isinstance(prompts, str):
        return [prompts]
    items: list[object] = list(prompts)
    ids = [t for t in items if isinstance(t, int)]
    if items and len(ids) == len(items):
        return [ids]
    return [p for p in items if isinstance(p, (str, list))]


def _conversation_list(messages: Messages | Sequence[Messages]) -> list[Messages]:
    """One conversation (a list of message dicts) or several."""
    items: list[object] = list(messages)
    if items and isinstance(items[0], dict):
        return [[m for m in items if isinstance(m, dict)]]
    return [c for c in items if isinstance(c, list)]
