"""`awqserve chat [MODEL | --url URL]`: chat in the terminal, streaming, with slash commands.

`--url` talks to a running server; otherwise the real server starts in this process on a private
loopback port, on MODEL or the built-in demo model (chat/startup.py), showing its load progress.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from awqserve.chat.client import ChatClient


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", nargs="?", default=None,
                        help="model directory to load in this process (default: the built-in demo model)")
    parser.add_argument("--url", default=None, help="chat with a running server instead, e.g. http://127.0.0.1:8000")
    parser.add_argument("--api-key", default=None, help="bearer key for --url (default: $AWQSERVE_API_KEY, "
                                                        "then $OPENAI_API_KEY)")
    parser.add_argument("--model-name", default=None, help="served model name to ask for (default: the first listed)")
    parser.add_argument("--system", default=None, help="system prompt")
    parser.add_argument("--temperature", type=float, default=None,
                        help="sampling temperature (default: the model's generation_config, as the server applies it)")
    parser.add_argument("--max-tokens", type=int, default=1024, help="longest reply in tokens (0: no limit)")
    parser.add_argument("--seed", type=int, default=None, help="sampling seed sent with every request (reproducible)")
    local = parser.add_argument_group("in-process model (without --url)")
    local.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    local.add_argument("--max-model-len", type=int, default=None)
    local.add_argument("--reasoning-parser", default=None, choices=["qwen3"],
                       help="show <think>…</think> as dimmed reasoning")
    local.add_argument("--compile", action="store_true",
                       help="compile the decode step (slower start, faster replies; `serve` compiles by default)")


def run(args: argparse.Namespace) -> int:
    from awqserve.chat.client import ChatClient, ChatError
    from awqserve.chat.repl import Display, line_reader, run_session, stdout_is_terminal
    from awqserve.chat.session import Conversation

    if args.url and args.model:
        print("awqserve chat: error: give MODEL (load it here) or --url (use a server), not both", file=sys.stderr)
        return 2
    if args.model and not Path(args.model).expanduser().is_dir():
        print(f"awqserve chat: error: model directory {args.model} does not exist", file=sys.stderr)
        return 2
    display = Display(sys.stdout, sys.stderr, stdout_is_terminal())
    conv = Conversation(system=args.system, temperature=args.temperature, max_tokens=args.max_tokens or None,
                        seed=args.seed)

    def session(client: ChatClient) -> int:
        model = args.model_name or client.first_model()
        if display.decorated:
            display.note(f"chatting with {model}: /help lists the commands, Ctrl-C stops a reply, Ctrl-D quits")
        return run_session(client, model, conv, display, line_reader(display, sys.stdin))

    try:
        return _with_server(args, session)
    except ChatError as e:
        print(f"awqserve chat: error: {e}", file=sys.stderr)
        return 1


def _with_server(args: argparse.Namespace, session: Callable[["ChatClient"], int]) -> int:
    from awqserve.chat.client import ChatClient
    from awqserve.chat.startup import local_server, wait_ready

    if args.url:
        key = args.api_key or os.environ.get("AWQSERVE_API_KEY") or os.environ.get("OPENAI_API_KEY")
        client = ChatClient(args.url, key)
        wait_ready(client, sys.stderr)
        return session(client)
    from awqserve.config.engine_config import EngineConfig

    engine = EngineConfig(model=args.model, device=args.device, max_model_len=args.max_model_len,
                          enforce_eager=not args.compile)
    with local_server(engine, args.reasoning_parser) as local:
        client = ChatClient(local.url, local.api_key)
        wait_ready(client, None, local.dead)  # the engine draws its own progress while it loads
        return session(client)
