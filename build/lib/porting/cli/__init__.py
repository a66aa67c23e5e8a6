"""porting: convert fairseq translation models, run them without fairseq, and prove nothing changed.

Convert checkpoints to safetensors (`convert`), translate with the native port (`translate`), score
and tune it (`bleu`, `search`, `select`), and compare it with the original layer by layer
(`parity`). Each command's --help lists its options and their defaults.
"""
# Each subcommand lives in its own module; building the parser imports only their argument lists,
# so `porting --help` starts at once and commands of the native side never pull in fairseq.
from __future__ import annotations

import argparse
import importlib
import logging
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
    from porting import __version__

    parser = argparse.ArgumentParser(prog="porting", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"porting-workbench {__version__}")
    verbosity = verbosity_options()
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text, parents=[verbosity],
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        p.set_defaults(_module=module)
        importlib.import_module(module).add_arguments(p)
    return parser


def verbosity_options() -> argparse.ArgumentParser:
    """-v/-q, as a parent parser: every command has them, and so does every nested one (convert's)."""
    verbosity = argparse.ArgumentParser(add_help=False)
    group = verbosity.add_argument_group("output")
    group.add_argument("-v", "--verbose", action="count", default=0, help="more detail on standard error (-vv: debug)")
    group.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors on standard error")
    return verbosity


def configure_logging(args) -> None:
    """Ours at INFO (-v: DEBUG; -q: WARNING); every other library's at WARNING unless -vv, so that
    matplotlib, fairseq, torch and the rest keep their chatter to themselves."""
    # the root's level is what every other library's loggers inherit, those created later too (torch
    # creates some at exit and logs cache statistics at INFO): warnings, unless -vv
    logging.basicConfig(format="%(levelname)s: %(message)s", force=True,
                        level=logging.DEBUG if args.verbose > 1 else logging.WARNING)
    ours = logging.WARNING if args.quiet else logging.DEBUG if args.verbose else logging.INFO
    for name in ("porting", "converters", "parity"):
        logging.getLogger(name).setLevel(ours)


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand. What goes wrong outside it is one line, never a traceback: an interrupt
    at any time (exit 130), a reader that closed our output early (`| head`: quiet, exit 141 as a
    shell reports SIGPIPE), an output that cannot be written (a full disk, /dev/full: exit 1)."""
    try:
        args = build_parser().parse_args(argv)
        configure_logging(args)
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
