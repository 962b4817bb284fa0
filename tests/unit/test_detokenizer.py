"""Detokenizer: multi-byte UTF-8 held back, stop strings across tokens, stop tokens, limits."""
from __future__ import annotations

from _engine_fakes import EOS, SPECIAL, ByteTokenizer
from awqserve.engine.detokenizer import Detokenizer
from awqserve.engine.request import Request, RequestStatus
from awqserve.engine.sampling_params import SamplingParams
from awqserve.engine.scheduler import check_stop

PROMPT = list(b"Q: ")


def _feed(tokens: list[int], params: SamplingParams, max_tokens: int = 100) -> tuple[list[str], str, Request]:
    """Feed tokens one by one as the engine does (scheduler.check_stop, then the detokenizer's stop
    strings); return the emitted deltas, final text, request."""
    detok = Detokenizer(ByteTokenizer())
    req = Request("r", PROMPT, params, max_tokens=max_tokens, eos_token_ids=(EOS,))
    st = detok.new_state(PROMPT)
    deltas = []
    for tok in tokens:
        req.all_token_ids.append(tok)
        status = check_stop(req)
        if status != RequestStatus.FINISHED_STOPPED:
            stop = detok.process_token(st, tok, req.params, req.num_output_tokens)
            if stop is not None:
                status, req.stop_reason = RequestStatus.FINISHED_STOPPED, stop
        if status is not None:
            req.status = status
        deltas.append(detok.take_delta(st, status is not None))
        if status is not None:
            break
    return deltas, st.text[: st.emitted], req


def test_multibyte_characters_are_never_split() -> None:
    text = "a😀é中b"
    deltas, final, _ = _feed(list(text.encode()), SamplingParams())
    assert final == text and "".join(deltas) == text
    assert all("\ufffd" not in d for d in deltas)
    assert deltas[1:4] == ["", "", ""] and deltas[4] == "😀"  # the emoji's 4 bytes arrive as one delta


def test_stop_string_spanning_tokens_is_not_emitted() -> None:
    deltas, final, req = _feed(list(b"Hello STOP world"), SamplingParams(stop=["STOP"]))
    assert final == "Hello " and "".join(deltas) == "Hello "
    assert req.status == RequestStatus.FINISHED_STOPPED and req.stop_reason == "STOP"
    assert not any("S" in d for d in deltas)


def test_partial_stop_match_is_held_back_then_released() -> None:
    deltas, final, req = _feed(list(b"a STx STOP"), SamplingParams(stop=["STOP"]))
    # "S" and "ST" are held until "x" shows they are not a stop string.
    assert deltas[:5] == ["a", " ", "", "", "STx"]
    assert final == "a STx " and req.stop_reason == "STOP"


def test_include_stop_str_in_output_and_earliest_match() -> None:
    params = SamplingParams(stop=["three", "two"], include_stop_str_in_output=True)
    _, final, req = _feed(list(b"one two three"), params)
    assert final == "one two" and req.stop_reason == "two"


def test_stop_token_ends_without_text() -> None:
    _, final, req = _feed(list(b"hi") + [7, 65], SamplingParams(stop_token_ids=[7]))
    assert final == "hi" and req.stop_reason == 7 and req.status == RequestStatus.FINISHED_STOPPED
    assert req.output_token_ids == [104, 105, 7]


def test_eos_unless_ignore_eos() -> None:
    _, final, req = _feed(list(b"ok") + [EOS, 65], SamplingParams())
    assert final == "ok" and req.status == RequestStatus.FINISHED_STOPPED and req.stop_reason is None
    _, final, req = _feed(list(b"ok") + [EOS, 65], SamplingParams(ignore_eos=True, skip_special_tokens=False))
    assert final == "ok<eos>A" and req.status != RequestStatus.FINISHED_STOPPED


def test_min_tokens_defers_stop_token() -> None:
    _, _, req = _feed([EOS, 65, 66, EOS], SamplingParams(min_tokens=2))
    assert req.num_output_tokens == 4 and req.status == RequestStatus.FINISHED_STOPPED


def test_max_tokens_and_flush_of_held_text() -> None:
    deltas, final, req = _feed(list(b"abcST"), SamplingParams(stop=["STOP"]), max_tokens=5)
    assert req.status == RequestStatus.FINISHED_LENGTH
    assert final == "abcST" and deltas[-1] == "ST"  # a held partial match is flushed at the end


def test_skip_special_tokens() -> None:
    _, final, _ = _feed([65, SPECIAL, 66], SamplingParams())
    assert final == "AB"
    _, final, _ = _feed([65, SPECIAL, 66], SamplingParams(skip_special_tokens=False))
    assert final == "A<special>B"
