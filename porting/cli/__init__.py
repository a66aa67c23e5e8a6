"""The `porting` command. Each subcommand lives in its own module, imported only when it runs,
so that commands of the native side never pull in fairseq."""
from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module with add_arguments(parser) and run(args) -> int, one-line help)
COMMANDS = {
    "example": ("porting.cli.example", "translate a few lines of the shipped test set with fairseq"),
    "record": ("porting.cli.record", "record fairseq's reference runs on the shipped example models"),
    "convert": ("porting.cli.convert", "convert checkpoints into a clean safetensors model directory"),
    "inspect": ("porting.cli.inspect", "list the tensors of a .pt/.bin/.safetensors file or model directory"),
    "translate": ("porting.cli.translate", "translate with the native port (no fairseq needed)"),
    "bleu": ("porting.cli.bleu", "BLEU and chrF of the port's translations (sacreBLEU, with signatures)"),
    "search": ("porting.cli.search", "grid search over generation settings, tuned on one split, reported on another"),
    "select": ("porting.cli.select", "score each checkpoint and their ensemble, report the best"),
    "kernels": ("porting.cli.kernels", "build the C kernels now and say which path a run takes, and why"),
    "parity": ("porting.cli.parity", "the port against fairseq (live or recorded), layer by layer, with a report"),
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
    """Run one subcommand. What goes wrong outside it is one line, never a traceback: an interrupt
    at any time (exit 130), a reader that closed our output early (`| head`: quiet, exit 141 as a
    shell reports SIGPIPE), an output that cannot be written (a full disk, /dev/full: exit 1)."""
    try:
        args = build_parser().parse_args(argv)
        return importlib.import_module(args._module).run(args) or 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        _silence_stdout()
        return 141
    except OSError as e:
        if e.filename is None and e.errno is not None:       # a write to standard output or error
            _silence_stdout()
            print(f"error: cannot write the output: {e.strerror}", file=sys.stderr)
            return 1
        raise


def _silence_stdout() -> None:
    """Python flushes stdout again at exit; point it at /dev/null so that flush cannot fail too."""
    import os

    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    sys.exit(main())
