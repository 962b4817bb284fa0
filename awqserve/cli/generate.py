"""`awqserve generate [MODEL] (--prompt TEXT | --chat TEXT)`: one completion, printed to stdout."""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", nargs="?", default=None, help="model directory (default: the built-in demo model)")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--prompt", help="raw text prompt (completion)")
    what.add_argument("--chat", help="a user message, sent through the model's chat template")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--max-model-len", type=int, default=None)
    parser.add_argument("--chat-template", default=None,
                        help="chat template (Jinja text or a file) overriding the model's")
    parser.add_argument("--compile", action="store_true",
                        help="compile the decode step (pays off for long outputs; `serve` compiles by default)")


def run(args: argparse.Namespace) -> int:
    from awqserve.engine.sampling_params import SamplingParams
    from awqserve.entrypoints.llm import LLM

    params = SamplingParams(max_tokens=args.max_tokens, temperature=args.temperature, top_p=args.top_p,
                            seed=args.seed)
    llm = LLM(args.model, device=args.device, max_model_len=args.max_model_len, chat_template=args.chat_template,
              enforce_eager=not args.compile)
    if args.chat is not None:
        out = llm.chat([{"role": "user", "content": args.chat}], params)
    else:
        out = llm.generate(args.prompt, params)
    print(out[0].outputs[0].text)
    return 0
