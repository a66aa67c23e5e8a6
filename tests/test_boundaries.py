"""The native side never imports the original: `porting` and `converters` run without fairseq."""
import pkgutil
import subprocess
import sys

import porting
import converters


def test_native_packages_do_not_import_fairseq():
    modules = [m.name for pkg in (porting, converters)
               for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + ".")]
    code = ("import importlib, sys\n"
            f"for m in {['porting', 'converters'] + modules!r}: importlib.import_module(m)\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('fairseq', 'fairseq_cli'))\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cli_help_does_not_need_fairseq():
    code = ("import sys\nfrom porting.cli import build_parser\nbuild_parser()\n"
            "assert not any(m.startswith('fairseq') for m in sys.modules)\n")
    subprocess.run([sys.executable, "-c", code], check=True)
