"""`awqserve demo-model`: build (once) and print the path of the built-in AWQ demo model."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", type=Path, default=None,
                        help="directory to build into (default: the user cache, "
                             "$XDG_CACHE_HOME/awqserve/demo-smollm2-135m-awq-g64-v1)")
    parser.add_argument("--force", action="store_true", help="rebuild even if a finished build exists")
    parser.add_argument("--record-recipe", type=Path, default=None, metavar="NPZ",
                        help="run the full AWQ search and save its decisions to NPZ (the packaged "
                             "awqserve/data/demo_awq_recipe.npz lets builds skip the search)")


def run(args: argparse.Namespace) -> int:
    from awqserve.tools.demo_model import ensure_demo_model, record_demo_recipe

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.record_recipe is not None:
        print(record_demo_recipe(args.record_recipe))
        return 0
    print(ensure_demo_model(args.output, force=args.force))
    return 0
