"""The `porting` command. Each subcommand lives in its own module, imported only when it runs,
so that commands of the native side never pull in fairseq."""
from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module with add_arguments(parser) and run(args) -> int, one-line help)
COMMANDS = {
    "example": ("parity.example", "translate a few lines of the shipped test set with fairseq"),
    "record": ("parity.record", "record fairseq's reference runs on the shipped example models"),
    "convert": ("converters.command_convert", "convert checkpoints into a clean safetensors model directory"),
    "inspect": ("converters.command_inspect", "list the tensors of a .pt/.bin/.safetensors file or model directory"),
    "translate": ("porting.command_translate", "translate with the native port (no fairseq needed)"),
    "bleu": ("porting.command_bleu", "BLEU and chrF of the port's translations (sacreBLEU, with signatures)"),
    "search": ("porting.command_search", "grid search over generation settings, tuned on one split, reported on another"),
    "select": ("porting.command_select", "score each checkpoint and their ensemble, report the best"),
    "parity": ("parity.command_parity", "the port against fairseq (live or recorded), layer by layer, with a report"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="porting", description=__doc__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return importlib.import_module(args._module).run(args) or 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
