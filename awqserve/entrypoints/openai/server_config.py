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
    disable_log_requests: bool = False
    chat_template: str | None = None  # template text overriding the tokenizer's
    log_level: str = "info"
    ssl_keyfile: str | None = None
    ssl_certfile: str | None = None

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
        ]
        for ok, why in checks:
            if not ok:
                raise ValueError(why)

    @property
    def rate_limited(self) -> bool:
        return self.rate_limit_rpm is not None or self.rate_limit_tpm is not None
