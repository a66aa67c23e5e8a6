"""Honest --help (issue 31, item 3): every option of every command says what it does; a default is
printed only where it is the value used, once; the generation options say where theirs come from."""
from __future__ import annotations

import argparse

from porting_cli import build_parser


def parsers():
    """(command name, parser) for every command and nested command (convert's)."""
    out = []

    def walk(name, p):
        out.append((name, p))
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                for sub_name, sub in a.choices.items():
                    walk(f"{name} {sub_name}".strip(), sub)
    walk("", build_parser())
    return out


def test_every_option_has_help_and_honest_defaults():
    missing, twice, none = [], [], []
    for name, p in parsers():
        text = p.format_help()
        none += [name] if "(default: None)" in text else []
        for a in p._actions:
            if isinstance(a, (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)):
                continue
            if not a.help:
                missing.append(f"{name} {a.option_strings or a.dest}")
            elif p.formatter_class(prog="x")._get_help_string(a).count("(default:") > 1:
                twice.append(f"{name} {a.option_strings}")
    assert (missing, twice, none) == ([], [], [])


def test_generation_options_say_where_their_values_come_from():
    text = dict(parsers())["translate"].format_help()
    assert "generation_config.json, else fairseq's 5" in " ".join(text.split())       # --beam
    assert "(default: standard input) (default:" not in text
