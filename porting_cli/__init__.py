"""porting: convert fairseq translation models, run them without fairseq, and prove nothing changed.

Convert checkpoints to safetensors (`convert`), translate with the native port (`translate`), score
and tune it (`bleu`, `search`, `select`), and compare it with the original layer by layer
(`parity`). Each command's --help lists its options and their defaults.
"""
# Each subcommand lives in its own module; building the parser imports only their argument lists,
# so `porting --help` starts at once and commands of the native side never pull in fairseq.
# Importing this module runs nothing but `sys` (already loaded): an interrupt can only reach main's
# handler once main runs, so every other import waits inside a function.
from __future__ import annotations

import sys

TYPE_CHECKING = False                     # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    import argparse

# name -> (module with add_arguments(parser) and run(args) -> int, one-line help)
COMMANDS = {
    "example": ("porting_cli.example", "translate a few lines of the shipped test set with fairseq"),
    "record": ("porting_cli.record", "record fairseq's reference runs on the shipped example models"),
    "convert": ("porting_cli.convert", "convert checkpoints into a clean safetensors model directory"),
    "inspect": ("porting_cli.inspect", "list the tensors of a .pt/.bin/.safetensors file or model directory"),
    "translate": ("porting_cli.translate", "translate with the native port (no fairseq needed)"),
    "bleu": ("porting_cli.bleu", "BLEU and chrF of the port's translations (sacreBLEU, with signatures)"),
    "search": ("porting_cli.search", "grid search over generation settings, tuned on one split, reported on another"),
    "select": ("porting_cli.select", "score each checkpoint and their ensemble, report the best"),
    "kernels": ("porting_cli.kernels", "build the C kernels now and say which path a run takes, and why"),
    "parity": ("porting_cli.parity", "the port against fairseq (live or recorded), layer by layer, with a report"),
}


def build_parser() -> argparse.ArgumentParser:
    import argparse
    import importlib

    from porting import __version__

    parser = argparse.ArgumentParser(prog="porting", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"porting-workbench {__version__}")
    verbosity = verbosity_options()
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text, parents=[verbosity],
                           formatter_class=help_formatter())
        p.set_defaults(_module=module)
        importlib.import_module(module).add_arguments(p)
    return parser


def help_formatter():
    """The help layout of every command (argparse is imported here, when a parser is built)."""
    import argparse

    class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
        """argparse's "(default: X)" only where it says something: not for a default of None (the real
        value then comes from elsewhere, which the help text says), not for a flag, and never twice."""

        def _get_help_string(self, action):
            text = action.help or ""
            if action.default in (None, False, argparse.SUPPRESS) or "default" in text:
                return text
            return super()._get_help_string(action)
    return HelpFormatter


def verbosity_options() -> argparse.ArgumentParser:
    """-v/-q, as a parent parser: every command has them, and so does every nested one (convert's)."""
    import argparse

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
    import logging

    logging.basicConfig(format="%(levelname)s: %(message)s", force=True,
                        level=logging.DEBUG if args.verbose > 1 else logging.WARNING)
    ours = logging.WARNING if args.quiet else logging.DEBUG if args.verbose else logging.INFO
    for name in ("porting", "converters", "parity"):
        logging.getLogger(name).setLevel(ours)


# commands that may run without torch, which they import (import_holding_interrupts) when they need it:
# translate, through porting/lean.py (torch's import alone takes ~1.8 s, more than translating a line)
TORCH_WHEN_NEEDED = {"porting_cli.translate"}


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand. What goes wrong outside it is one line, never a traceback: an interrupt
    at any time (exit 130), a reader that closed our output early (`| head`: quiet, exit 141 as a
    shell reports SIGPIPE), an output that cannot be written (a full disk, /dev/full: exit 1)."""
    try:
        import importlib

        args = build_parser().parse_args(argv)
        configure_logging(args)
        # before the command's module: any torch it imports is then imported already
        import_holding_interrupts("numpy", *(() if args._module in TORCH_WHEN_NEEDED else ("torch",)))
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
    finally:
        _forget_interrupts_cpython_remembers()       # here or in a command (bulk translate's 130)


def import_holding_interrupts(*modules: str) -> None:
    """Import these (numpy, torch: a command's own later import of them is then a lookup). numpy's and
    torch's C start-ups turn a Ctrl-C that lands inside them into something else:
    - torch's C++ start-up imports numpy by itself and, should that import fail, clears the error
      and goes on without numpy (torch/csrc/utils/tensor_numpy.cpp, is_numpy_available: "Failed to
      initialize NumPy"). The interrupt is lost and the command runs on (exit 0, nothing said), or
      numpy is left half-imported and torch's next `import numpy` fails with a traceback ("cannot
      load module more than once per process");
    - numpy's C start-up imports datetime through PyCapsule_Import, which turns any error into an
      ImportError: numpy then reports a broken install (exit 1, a traceback);
    - torch's C++ initialisers (`_c10d_init`, `_dist_autograd_init`, `_multiprocessing_init`)
      import Python modules; an interrupt there becomes a C++ exception nothing catches, and the
      process aborts (SIGABRT).
    Each was reproduced by raising SIGINT where it lands (tests/test_hostile_input.py). So they are
    imported here with SIGINT blocked: a Ctrl-C in that second waits as pending instead, is
    delivered when the mask is restored, raises in our code and reaches main's handler. Not before
    the arguments are parsed: `--help` needs neither."""
    import importlib
    import signal

    if not hasattr(signal, "pthread_sigmask"):               # Windows: no signal masks
        for module in modules:
            importlib.import_module(module)
        return
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        for module in modules:
            importlib.import_module(module)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


def _forget_interrupts_cpython_remembers() -> None:
    """CPython remembers a KeyboardInterrupt that left a *string* exec or eval (dataclasses and
    namedtuple build their methods that way, at import) even after it was caught, and under
    `python -m porting_cli` it then ends the process by SIGINT instead of with main's status
    (Modules/main.c, Py_RunMain; a script such as the `porting` command is not affected). The flag
    is reset at the start of every string exec, so one empty exec clears it."""
    exec("")


def _silence_stdout() -> None:
    """Python flushes stdout again at exit; point it at /dev/null so that flush cannot fail too."""
    import os

    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    sys.exit(main())
