"""`EngineClient`: the interface the HTTP layer depends on, and `EngineInfo`, what it may know of the model.

The real implementation is `AsyncEngine` (engine thread + asyncio streams); tests use a fake that
implements the same protocol (tests/unit/fake_engine.py). The server never reaches past it: no
model, runner or scheduler objects cross this boundary.
"""
from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Mapping, Protocol, Sequence

from awqserve.engine.outputs import RequestOutput
from awqserve.engine.progress import ProgressSnapshot
from awqserve.engine.sampling_params import SamplingParams
from awqserve.engine.stats import StatsHolder
from awqserve.quant.base import QuantInfo
from awqserve.structured.backend import CompiledGrammar
from awqserve.structured.spec import GrammarSpec


@dataclass(frozen=True)
class EngineInfo:
    """Static facts of the served model, known once it has loaded.

    `generation_defaults` is the checkpoint's generation_config.json (sampling defaults applied the way
    vLLM applies them: a request's own value wins). `vocab_size` is the model's (the embedding rows):
    the one bound token ids are checked against.
    """

    model_name: str
    model_path: Path | None
    max_model_len: int
    vocab_size: int
    max_logprobs: int
    eos_token_ids: tuple[int, ...] = ()
    generation_defaults: Mapping[str, Any] = field(default_factory=dict)
    quant_info: QuantInfo | None = None


class EngineClient(Protocol):
    """An engine as the server sees it. Thread-safe; `generate` is called from an asyncio loop.

    Lifecycle: `start()` returns at once and loads in the background; `ready` turns True when
    `info` and `tokenizer` are set; `dead` (with `error`) when loading failed or the engine stopped —
    from then on `generate` raises EngineDeadError.
    """

    @property
    def ready(self) -> bool: ...

    @property
    def dead(self) -> bool: ...

    @property
    def error(self) -> BaseException | None: ...

    @property
    def stats(self) -> StatsHolder: ...

    @property
    def info(self) -> EngineInfo | None: ...

    @property
    def progress(self) -> ProgressSnapshot:
        """Start-up progress: phase (engine/progress.py PHASES), its fraction and ETA; "ready" once loaded."""
        ...

    @property
    def tokenizer(self) -> Any: ...  # a Hugging Face tokenizer (untyped library)

    def start(self) -> None: ...

    def shutdown(self, timeout: float = 10.0) -> None: ...

    def num_waiting(self) -> int:
        """Requests not yet running (handed over or queued in the engine)."""
        ...

    def check_request(self, prompt_token_ids: Sequence[int], params: SamplingParams) -> None:
        """The engine's validation (InputProcessor.validate, strict context rule): raises
        InvalidRequestError naming the problem. Only valid once `ready`."""
        ...

    def compile_grammar(self, spec: GrammarSpec) -> Future[CompiledGrammar]:
        """Compile (or find cached) an output grammar off the engine thread; the Future fails with a
        GrammarError (an InvalidRequestError) naming the problem. Only valid once `ready`."""
        ...

    def generate(self, prompt_token_ids: list[int], params: SamplingParams,
                 request_id: str) -> AsyncIterator[RequestOutput]:
        """Stream a request's outputs until finished; closing the iterator aborts it."""
        ...

    def abort(self, request_id: str) -> None: ...
