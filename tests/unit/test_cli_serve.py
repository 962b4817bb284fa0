"""`awqserve serve` flags → ServerConfig/EngineConfig; vLLM flags we do not implement are refused clearly."""
from __future__ import annotations

import argparse

import pytest

from awqserve.cli import serve


def parse(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    serve.add_arguments(p)
    return p.parse_args(list(argv))


def test_defaults() -> None:
    server, engine = serve.build_configs(parse(), environ={})
    assert (server.host, server.port) == ("127.0.0.1", 8000)
    assert engine.model is None and engine.max_model_len is None  # demo model; 8192 capped by the model
    assert server.api_keys == () and server.memory_warning_threshold == 0.9 and server.max_num_queued_reqs == 256


def test_vllm_flags_map(tmp_path) -> None:  # noqa: ANN001
    (tmp_path / "config.json").write_text('{"quantization_config": {"quant_method": "compressed-tensors"}}')
    server, engine = serve.build_configs(parse(
        str(tmp_path), "--host", "0.0.0.0", "--port", "9000", "--served-model-name", "a", "b",
        "--max-model-len", "4k", "--max-num-seqs", "8", "--max-num-batched-tokens", "512",
        "--gpu-memory-utilization", "0.5", "--quantization", "compressed-tensors", "--dtype", "half",
        "--api-key", "k1", "--allowed-origins", '["http://a", "http://b"]', "--enable-prefix-caching",
        "--max-num-queued-reqs", "4", "--seed", "3", "--max-logprobs", "5", "--disable-log-requests",
        "--kv-cache-memory", "512MiB", "--rate-limit-rpm", "10", "--request-timeout", "0"),
        environ={"AWQSERVE_API_KEY": "k2,k3"})
    assert server.served_model_names == ("a", "b") and engine.served_model_name == "a"
    assert engine.max_model_len == 4000 and engine.max_num_seqs == 8 and engine.dtype == "float16"
    assert engine.kv_cache_memory == 512 << 20 and engine.enable_prefix_caching is True and engine.seed == 3
    assert server.api_keys == ("k1", "k2", "k3") and server.allowed_origins == ("http://a", "http://b")
    assert server.rate_limit_rpm == 10 and server.request_timeout is None and server.port == 9000


@pytest.mark.parametrize("argv, needle", [
    (["--tensor-parallel-size", "2"], "one device"),
    (["-tp", "4"], "one device"),
    (["--trust-remote-code"], "never runs model code"),
    (["--kv-cache-dtype", "fp8"], "activation dtype"),
])
def test_refused_vllm_flags(argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        parse(*argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "awqserve does not implement" in err and needle in err


def test_agent_flags_as_in_vllm(capsys: pytest.CaptureFixture[str]) -> None:
    server, _ = serve.build_configs(parse("--enable-auto-tool-choice", "--tool-call-parser", "hermes",
                                    "--reasoning-parser", "qwen3"))
    assert server.tool_parser_name == "hermes" and server.reasoning_parser == "qwen3"
    assert serve.build_configs(parse(), environ={})[0].tool_parser_name == "hermes"  # no flags needed for tools
    with pytest.raises(SystemExit):
        parse("--tool-call-parser", "mistral")
    assert "not a tool-call format awqserve parses" in capsys.readouterr().err


def test_harmless_values_of_refused_flags_pass() -> None:
    parse("--tensor-parallel-size", "1", "--kv-cache-dtype", "auto")


def test_bad_values(tmp_path) -> None:  # noqa: ANN001
    with pytest.raises(ValueError, match="does not exist"):
        serve.build_configs(parse(str(tmp_path / "missing")), environ={})
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="not a quantized checkpoint"):
        serve.build_configs(parse(str(tmp_path), "--quantization", "awq"), environ={})
    with pytest.raises(ValueError, match="memory_warning_threshold"):
        serve.build_configs(parse("--memory-warning-threshold", "2"), environ={})
    assert serve.run(parse("--max-num-seqs", "0")) == 2
