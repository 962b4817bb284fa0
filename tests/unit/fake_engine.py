"""A deterministic `EngineClient` (the protocol AsyncEngine implements) so the HTTP layer is testable without
weights. Validation is the real engine's (`InputProcessor`), so limits answer exactly as in production.

Tokenizer: a real `PreTrainedTokenizerFast`, byte-level with no merges (one token per byte) plus
ChatML specials and a ChatML template. Generation: greedy requests spell PHRASE over and over;
sampled ones draw lowercase letters from a `random.Random(seed + sample index)`. Slots: at most
`max_num_seqs` requests run at once, the rest wait (so queue limits are observable). Triggers in
the prompt text: `__script__:TEXT` answers exactly TEXT (`_script`); `__oom__` fails the request with
RequestError(503, "out_of_memory") after one token; `__crash__` raises a RuntimeError naming a file;
`__die__` kills the engine. Env overrides (for the server-as-subprocess tests):
FAKE_ENGINE_LOAD_DELAY, FAKE_ENGINE_STEP_DELAY, FAKE_ENGINE_KV_USAGE.
"""
from __future__ import annotations

import asyncio
from concurrent.futures import Future
import os
import random
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, AsyncIterator, Sequence

from awqserve.config.engine_config import EngineConfig
from awqserve.engine.input_processor import InputProcessor
from awqserve.engine.outputs import CompletionOutput, RequestMetrics, RequestOutput, TokenLogprob
from awqserve.engine.progress import ProgressSnapshot
from awqserve.engine.protocol import EngineInfo
from awqserve.engine.sampling_params import SamplingParams
from awqserve.engine.stats import StatsHolder
from awqserve.engine.structured_output import StructuredOutputManager
from awqserve.errors import EngineDeadError, RequestError
from awqserve.quant.base import QuantInfo
from awqserve.structured import CompiledGrammar, GrammarSpec

PHRASE = "The quick brown fox jumps over the lazy dog. "
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def build_fake_tokenizer() -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>",  # type: ignore[no-untyped-call]
                                   pad_token="<|endoftext|>")
    fast.chat_template = CHATML
    return fast


def _env_float(name: str, default: float | None) -> float | None:
    value = os.environ.get(name)
    return float(value) if value else default


class FakeAsyncEngine:
    """Implements `EngineClient` (checked by mypy through `_CHECK` below); generation runs on the caller's loop."""

    def __init__(self, config: EngineConfig, load_delay: float | None = None, step_delay: float | None = None,
                 kv_usage: float | None = None) -> None:
        self.config = config
        self.load_delay = _env_float("FAKE_ENGINE_LOAD_DELAY", load_delay) or 0.0
        self.step_delay = _env_float("FAKE_ENGINE_STEP_DELAY", step_delay) or 0.01
        self.forced_kv = _env_float("FAKE_ENGINE_KV_USAGE", kv_usage)
        self.ready = False
        self.dead = False
        self.error: BaseException | None = None
        self.stats = StatsHolder()
        self.max_model_len = config.max_model_len or 256
        self.info: EngineInfo | None = None
        self.tokenizer: Any = None
        self._inputs: InputProcessor | None = None
        self._structured: StructuredOutputManager | None = None
        self._running: set[str] = set()
        self._waiting: list[str] = []
        self._aborted: set[str] = set()
        self._slot_free: asyncio.Condition | None = None
        self.aborts: list[str] = []
        self.shutdown_called = False

    # ---- lifecycle ----

    def start(self) -> None:
        def load() -> None:
            time.sleep(self.load_delay)
            self.tokenizer = build_fake_tokenizer()
            eos = (self.tokenizer.eos_token_id,)
            quant = QuantInfo(method="awq", format="pack-quantized", bits=4, group_size=128, symmetric=True)
            self.info = EngineInfo(model_name=self.config.served_model_name or "/fake/fake-awq-model",
                                   model_path=Path("/fake/fake-awq-model"), max_model_len=self.max_model_len,
                                   vocab_size=len(self.tokenizer), max_logprobs=self.config.max_logprobs,
                                   eos_token_ids=eos, quant_info=quant)
            self._inputs = InputProcessor(max_model_len=self.max_model_len, vocab_size=len(self.tokenizer),
                                          max_logprobs=self.config.max_logprobs, eos_token_ids=eos)
            self._structured = StructuredOutputManager(self.tokenizer, len(self.tokenizer), eos)
            self.stats.update(num_kv_blocks=1024, block_size=16, kv_cache_bytes=1 << 26)
            self._publish()
            self.ready = True

        threading.Thread(target=load, daemon=True).start()

    def shutdown(self, timeout: float = 10.0) -> None:
        self.shutdown_called = True

    @property
    def progress(self) -> ProgressSnapshot:
        """Loading weights (no figures) until ready."""
        phase, fraction = ("ready", 1.0) if self.ready else ("loading_weights", 0.0)
        return ProgressSnapshot(phase, fraction, 0.0, None, "", "", 0.0, None, int(self.ready))

    def compile_grammar(self, spec: GrammarSpec) -> Future[CompiledGrammar]:
        """The real engine's compiler over the fake tokenizer: bad schemas fail exactly as in production."""
        assert self._structured is not None, "compile_grammar before the engine is ready"
        return self._structured.compile(spec)

    def check_request(self, prompt_token_ids: Sequence[int], params: SamplingParams) -> None:
        assert self._inputs is not None, "check_request before the engine is ready"
        self._inputs.validate(prompt_token_ids, params)

    def num_waiting(self) -> int:
        return len(self._waiting)

    def abort(self, request_id: str) -> None:
        self._aborted.add(request_id)
        self.aborts.append(request_id)

    def _publish(self) -> None:
        kv = self.forced_kv if self.forced_kv is not None else len(self._running) / max(self.config.max_num_seqs, 1)
        self.stats.update(num_running=len(self._running), num_waiting=len(self._waiting), kv_usage=kv)

    # ---- generation ----

    async def generate(self, prompt_token_ids: list[int], params: SamplingParams,
                       request_id: str) -> AsyncIterator[RequestOutput]:
        if self.dead:
            raise EngineDeadError("engine is dead")
        if self._slot_free is None:
            self._slot_free = asyncio.Condition()
        metrics = RequestMetrics(arrival_time=time.monotonic())
        self._waiting.append(request_id)
        self._publish()
        try:
            async with self._slot_free:
                await self._slot_free.wait_for(lambda: len(self._running) < self.config.max_num_seqs
                                               and self._waiting[0] == request_id)
                self._waiting.remove(request_id)
                self._running.add(request_id)
            self._publish()
            metrics.scheduled_time = time.monotonic()
            async for out in self._run(prompt_token_ids, params, request_id, metrics):
                yield out
        finally:
            if request_id in self._waiting:
                self._waiting.remove(request_id)
            self._running.discard(request_id)
            self._publish()
            if self._slot_free is not None:
                async with self._slot_free:
                    self._slot_free.notify_all()

    async def _run(self, prompt: list[int], params: SamplingParams, rid: str,
                   metrics: RequestMetrics) -> AsyncIterator[RequestOutput]:
        text_prompt = self.tokenizer.decode(prompt)
        self.stats.add(prompt_tokens=len(prompt))
        assert self._inputs is not None
        budget = self._inputs.max_tokens(len(prompt), params)
        script = _script(text_prompt, self.tokenizer)
        samples = [_Sample(i, params, self.tokenizer, budget, script) for i in range(params.n)]
        first = True
        while not all(s.finish for s in samples):
            await asyncio.sleep(self.step_delay)
            if rid in self._aborted:
                return
            if "__die__" in text_prompt:
                self.dead, self.error = True, RuntimeError("fake engine died")
                raise EngineDeadError("fake engine died")
            if "__crash__" in text_prompt:  # an unexpected failure whose text names a file on the server
                raise RuntimeError("kernel failed reading /srv/models/secret/model.safetensors")
            if "__oom__" in text_prompt and not first:
                raise RequestError("CUDA out of memory (fake)", status=503, kind="out_of_memory")
            now = time.monotonic()
            metrics.first_token_time = metrics.first_token_time or now
            metrics.last_token_time = now
            outs = [s.step() for s in samples]
            self.stats.add(generation_tokens=sum(len(o.token_ids_delta) for o in outs), num_steps=1)
            done = all(s.finish for s in samples)
            if done:
                metrics.finished_time = now
                self._finished(samples, prompt, metrics)
            yield RequestOutput(rid, prompt, outs, done, metrics=metrics,
                                prompt_logprobs=_prompt_logprobs(prompt, params) if first else None)
            first = False

    def _finished(self, samples: list["_Sample"], prompt: list[int], m: RequestMetrics) -> None:
        for s in samples:
            self.stats.count_finished(s.finish or "stop")
        assert m.scheduled_time is not None and m.first_token_time is not None
        for listener in self.stats.listeners:
            listener.on_request_finished(
                finish_reason=samples[0].finish or "stop", prompt_tokens=len(prompt),
                generation_tokens=sum(len(s.ids) for s in samples), queue_time=m.scheduled_time - m.arrival_time,
                ttft=m.first_token_time - m.arrival_time, prefill_time=0.001, decode_time=0.01,
                e2e_time=(m.finished_time or time.monotonic()) - m.arrival_time)
            listener.on_step(num_prompt_tokens=0, num_generation_tokens=1, inter_token_latencies=[self.step_delay])


SCRIPT = "__script__:"


def _script(prompt_text: str, tok: Any) -> list[int] | None:
    """Scripted output: a prompt whose last user turn says `__script__:TEXT` makes every sample answer
    exactly TEXT (byte tokens), then stop — so tests drive the parsers through the real HTTP layer."""
    at = prompt_text.rfind(SCRIPT)
    if at < 0:
        return None
    text = prompt_text[at + len(SCRIPT):].split("<|im_end|>", 1)[0]
    return [int(t) for t in tok.encode(text, add_special_tokens=False)]


def _prompt_logprobs(prompt: list[int], params: SamplingParams) -> list[TokenLogprob | None] | None:
    if params.prompt_logprobs is None:
        return None
    return [None] + [_logprob(t, params.prompt_logprobs) for t in prompt[1:]]


def _logprob(token_id: int, k: int) -> TokenLogprob:
    top = {token_id: -0.25}
    for j in range(k):
        top.setdefault((token_id + 1 + j) % 256, -1.0 - j)
    return TokenLogprob(token_id, -0.25, dict(list(top.items())[:max(k, 1)]))


class _Sample:
    """One of a request's n samples: produces tokens, applies stop strings with hold-back, max_tokens."""

    def __init__(self, index: int, params: SamplingParams, tok: Any, max_tokens: int,
                 script: list[int] | None = None) -> None:
        self.index, self.p, self.tok, self.max_tokens = index, params, tok, max_tokens
        self.script = script
        self.ids: list[int] = []
        self.sent = ""  # text already emitted
        self.finish: str | None = None
        self.phrase = tok.encode(PHRASE, add_special_tokens=False)
        seed = params.seed if params.seed is not None else random.randrange(1 << 30)
        self.rng = random.Random(seed * 1000 + index)

    def _next_token(self) -> int:
        if self.script is not None:
            return self.script[len(self.ids)]
        if self.p.greedy:
            return int(self.phrase[len(self.ids) % len(self.phrase)])
        return int(self.tok.encode(self.rng.choice("abcdefghij "), add_special_tokens=False)[0])

    def step(self) -> CompletionOutput:
        if self.finish:
            return CompletionOutput(self.index, self.sent, list(self.ids), finish_reason=self.finish)
        tid = self._next_token()
        self.ids.append(tid)
        text, stop = self._visible(self.tok.decode(self.ids))
        if stop is not None or (self.script is not None and len(self.ids) == len(self.script)):
            self.finish = "stop"
        elif len(self.ids) >= self.max_tokens:
            self.finish = "length"
        hold = 0 if self.finish else max((len(s) - 1 for s in self.p.stop), default=0)
        emit = text[: max(len(self.sent), len(text) - hold)]
        delta, self.sent = emit[len(self.sent):], emit
        lp = [_logprob(tid, self.p.logprobs)] if self.p.logprobs is not None else None
        return CompletionOutput(self.index, self.sent, list(self.ids), finish_reason=self.finish, stop_reason=stop,
                                text_delta=delta, token_ids_delta=[tid], logprobs_delta=lp)

    def _visible(self, text: str) -> tuple[str, str | None]:
        for s in self.p.stop:
            at = text.find(s)
            if at >= 0:
                return (text[: at + len(s)] if self.p.include_stop_str_in_output else text[:at]), s
        return text, None


if TYPE_CHECKING:  # the fake must keep matching the protocol the server depends on
    from awqserve.engine.protocol import EngineClient

    _CHECK: type[EngineClient] = FakeAsyncEngine
