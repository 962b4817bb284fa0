"""Frozen HTTP-server configuration (everything that is not the engine's). `awqserve serve` flags map onto it."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServerConfig:
    """How the HTTP layer behaves. Validated in `__post_init__`.

    `served_model_names` empty means "derive from the model" (the path given on the command line, or
    the demo model's directory name once it is resolved). The first name is the one reported in
    responses and metrics. `max_num_queued_reqs` bounds the engine's waiting queue as the server sees it;
    `rate_limit_*` None disables that limit. `request_timeout` None disables the per-request deadline.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    served_model_names: tuple[str, ...] = ()
    api_keys: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()
    allowed_methods: tuple[str, ...] = ("*",)
    allowed_headers: tuple[str, ...] = ("*",)
    allow_credentials: bool = False
    max_num_queued_reqs: int = 256
    rate_limit_rpm: int | None = None
    rate_limit_tpm: int | None = None
    request_timeout: float | None = 600.0
    memory_warning_threshold: float = 0.9
    debug_metrics: bool = False
    disable_metrics: bool = False
    protect_metrics: bool = False
    shutdown_timeout: float = 30.0
    max_request_body_bytes: int = 16 << 20
    disable_log_requests: bool = False  # no access-log line per request
    log_requests: bool = False  # also log each generation's prompt text and parameters (off: logs hold no prompts)
    chat_template: str | None = None  # template text overriding the tokenizer's
    log_level: str = "info"
    ssl_keyfile: str | None = None
    ssl_certfile: str | None = None
    # Agents: the tool-call format (hermes is the one we parse; "auto" picks it), the reasoning format
    # (None: reasoning text stays in the content, as in vLLM without --reasoning-parser).
    tool_call_parser: str = "auto"
    reasoning_parser: str | None = None
    responses_store_size: int = 1024  # responses kept for `previous_response_id` (0: stateless)
    ui: bool = True  # the chat page at `/` (`--no-ui` turns it off)
    # Set when this server is one replica of several (Ray Serve, awqserve/ray): sent as the
    # `x-awqserve-replica` response header and as a `replica` label on every metric.
    replica_id: str | None = None

    def __post_init__(self) -> None:
        checks = [
            (0 < self.port < 65536, "port must be in 1..65535"),
            (self.max_num_queued_reqs >= 1, "max_num_queued_reqs must be >= 1"),
            (self.rate_limit_rpm is None or self.rate_limit_rpm >= 1, "rate_limit_rpm must be >= 1"),
            (self.rate_limit_tpm is None or self.rate_limit_tpm >= 1, "rate_limit_tpm must be >= 1"),
            (self.request_timeout is None or self.request_timeout > 0, "request_timeout must be > 0"),
            (0.0 < self.memory_warning_threshold <= 1.0, "memory_warning_threshold must be in (0, 1]"),
            (self.shutdown_timeout >= 0, "shutdown_timeout must be >= 0"),
            (self.max_request_body_bytes >= 1024, "max_request_body_bytes must be >= 1024"),
            (all(k for k in self.api_keys), "api keys must be non-empty"),
            (self.tool_call_parser in ("auto", "hermes"), "tool_call_parser must be auto or hermes"),
            (self.reasoning_parser in (None, "qwen3"), "reasoning_parser must be qwen3 (or unset)"),
            (self.responses_store_size >= 0, "responses_store_size must be >= 0"),
        ]
        for ok, why in checks:
            if not ok:
                raise ValueError(why)

    @property
    def tool_parser_name(self) -> str:
        """The parser behind `tool_call_parser` ("auto": hermes, the format of Qwen3 and Qwen3-Next)."""
        return "hermes" if self.tool_call_parser == "auto" else self.tool_call_parser

    @property
    def rate_limited(self) -> bool:
        return self.rate_limit_rpm is not None or self.rate_limit_tpm is not None
