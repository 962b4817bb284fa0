"""`awqserve` console script: dispatches to one module per subcommand (imported lazily)."""
from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> (module exposing add_arguments(parser) and run(args) -> int, help text)
_COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("awqserve.cli.serve", "start the OpenAI-compatible HTTP server"),
    "chat": ("awqserve.cli.chat", "chat in the terminal with a running server or a model loaded here"),
    "generate": ("awqserve.cli.generate", "generate a completion offline and print it"),
    "demo-model": ("awqserve.cli.demo_model", "build (once) and print the path of the built-in demo model"),
    "quantize": ("awqserve.cli.quantize", "AWQ-quantize a float checkpoint to compressed-tensors int4"),
    "inspect": ("awqserve.cli.inspect", "report parameters, bytes and memory plan of a checkpoint"),
}


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="awqserve", description="OpenAI-compatible server for 4-bit AWQ models")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = next((a for a in argv if a in _COMMANDS), None)
    for name, (module, help_text) in _COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == wanted:  # import only the module that will run: keeps `--help` and startup fast
            importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if args.version:
        from awqserve.version import __version__

        print(__version__)
        return 0
    if not args.command:
        parser.print_help()
        return 2
    from awqserve.errors import AwqServeError

    try:
        return int(importlib.import_module(_COMMANDS[args.command][0]).run(args) or 0)
    except AwqServeError as e:  # user-facing errors: one line, no traceback
        print(f"awqserve {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
