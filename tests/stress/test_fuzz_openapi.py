"""Property-based fuzz of every operation in our own OpenAPI document (schemathesis): valid bodies
(positive) and schema-breaking ones (negative), path parameters included, generated from the document
the server serves at /openapi.json; the check is "never a server error" (no 5xx, no traceback), and an
error is always OpenAI's envelope. The server is the real one on the demo model with a 64-token
context, so a valid generating request ends within about a second. Examples per operation and mode:
10 in CI, 150 at full scale (`AWQSERVE_STRESS_SCALE=full`). Operations are driven through
`APIOperation.as_strategy` (schemathesis' pytest plugin does not run on pytest 9).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from awqserve.entrypoints.openai.openapi import build_document
from awqserve.entrypoints.openai.server_config import ServerConfig
from conftest import StressServer, scaled

EXAMPLES = int(scaled(10, 150))
# the page's static files and the Prometheus text are not JSON APIs; everything else is fuzzed
SKIP = {"GET /", "GET /ui/{name}", "GET /metrics"}
DOCUMENT = build_document(ServerConfig())
OPERATIONS = {op.label: op for op in (r.ok() for r in schemathesis.openapi.from_dict(DOCUMENT).get_all_operations())
              if op.label not in SKIP}


@pytest.fixture(scope="module")
def fuzz_server(stress_model_dir: Path) -> Iterator[StressServer]:
    server = StressServer(stress_model_dir, ["--max-model-len", "64", "--request-timeout", "60"]).wait_ready()
    yield server
    server.stop()


def test_fuzzed_document_is_the_served_one(fuzz_server: StressServer) -> None:
    import httpx

    assert httpx.get(fuzz_server.base_url + "/openapi.json").json() == DOCUMENT


def _is_envelope(body: Any) -> bool:
    err = body.get("error") if isinstance(body, dict) else None
    return isinstance(err, dict) and {"message", "type", "param", "code"} <= set(err)


# negative cases need something to break: a body (operations with only a string path parameter or
# nothing at all have no invalid input to generate)
CASES = [(label, mode) for label in sorted(OPERATIONS) for mode in GenerationMode
         if mode is GenerationMode.POSITIVE or OPERATIONS[label].body]


@pytest.mark.parametrize("label, mode", CASES, ids=[f"{label}-{mode.value}" for label, mode in CASES])
def test_no_server_errors(label: str, mode: GenerationMode, fuzz_server: StressServer) -> None:
    seen: list[int] = []

    @given(case=OPERATIONS[label].as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def run(case: Any) -> None:
        response = case.call(base_url=fuzz_server.base_url, timeout=90)
        seen.append(response.status_code)
        case.validate_response(response, checks=[not_a_server_error])
        ctype = response.headers.get("content-type") or [""]  # schemathesis keeps every value of a header
        if response.status_code >= 400 and ctype[0].startswith("application/json"):
            assert _is_envelope(response.json()), response.text[:500]
        assert "Traceback" not in response.text

    run()
    assert seen  # the operation was really exercised


def test_server_healthy_after_fuzz(fuzz_server: StressServer) -> None:
    assert fuzz_server.health()["_status"] == 200
    assert "Traceback" not in fuzz_server.log_text()
