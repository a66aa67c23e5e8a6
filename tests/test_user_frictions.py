"""What users trip over (issue 31): honest --help (every option says what it does; a default is
printed only where it is the value used, once), missing extras, languages and directions."""
from __future__ import annotations

import argparse

import pytest

from porting_cli import build_parser
from tests.conftest import requires_fairseq


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


def test_a_missing_extra_is_one_line_with_the_install(converted, tmp_path, monkeypatch, capsys):
    """After `pip install .` without [peers] (simulated: the modules made unimportable), the commands that
    need transformers or CTranslate2 say which install brings them, as --engine ray does for Ray."""
    import sys

    from parity import shipped
    from porting_cli import main

    hint = "pip install 'porting-workbench[peers]'"
    monkeypatch.setitem(sys.modules, "transformers", None)
    monkeypatch.setitem(sys.modules, "ctranslate2", None)
    run = shipped.RUNS / "ende-sep"
    for port in (f"transformers:{converted['ende-sep']}", f"ctranslate2:{tmp_path}"):
        assert main(["parity", "--original", f"recorded:{run}", "--port", port, "--report", str(tmp_path / "r")]) == 2
        err = capsys.readouterr().err
        assert f"needs {port.split(':')[0]}, which is not installed here: {hint}" in err and "Traceback" not in err
    assert main(["convert", "ctranslate2", "--model", str(converted["ende-sep"]), "--out", str(tmp_path / "ct2")]) == 1
    err = capsys.readouterr().err
    assert f"needs CTranslate2, which is not installed here: {hint}" in err and not (tmp_path / "ct2").exists()


def test_an_untrained_direction_is_translated_with_one_warning(converted, tmp_path):
    """fairseq translates any direction between languages the model has tokens for; so does the port,
    now with one warning naming the trained directions (before: without a word)."""
    import subprocess
    import sys

    from porting.format import language_tokens, read_config

    model = converted["m2m-enfres"]
    tokens = language_tokens(read_config(model))
    src, tgt = next((a, b) for a in tokens.langs for b in tokens.langs if a != b and f"{a}-{b}" not in tokens.lang_pairs)
    (tmp_path / "in").write_text("Hello.\nGood morning.\n")
    run = [sys.executable, "-m", "porting_cli", "translate", "--model", str(model), "--input", str(tmp_path / "in")]
    r = subprocess.run([*run, "--source-lang", src, "--target-lang", tgt], capture_output=True, text=True)
    warnings = [line for line in r.stderr.splitlines() if line.startswith("warning:")]
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 2
    assert warnings == [f"warning: {tokens.untrained(src, tgt)}"] and ", ".join(tokens.lang_pairs) in warnings[0]
    trained = tokens.lang_pairs[0].split("-")
    r = subprocess.run([*run, "--source-lang", trained[0], "--target-lang", trained[1]], capture_output=True, text=True)
    assert r.returncode == 0 and "warning" not in r.stderr


def test_a_missing_language_names_the_trained_directions_first():
    """With M2M-100's 100 languages the error listed every code; now the trained directions, then the
    first twelve codes and the count."""
    from porting.format import LanguageTokens

    langs = tuple(f"l{i:02d}" for i in range(100))
    tokens = LanguageTokens(langs, ("l00-l01", "l01-l00"), "multilingual", "src", True, False,
                            {lang: 10 + i for i, lang in enumerate(langs)})
    message = "; ".join(tokens.direction_problems("l00", "xx"))
    assert message.index("trained on l00-l01, l01-l00") < message.index("l11, … (100 in all)")
    assert "l12" not in message


def test_the_direction_belongs_to_the_call(converted):
    """One multilingual model serves every direction: a call names its own, without loading the weights
    again (before: a TypeError, and a 2.5 s reload per direction)."""
    from parity import shipped
    from porting import Translator
    from porting.tokenizer import DirectionError

    model = converted["m2m-enfres"]
    lines = shipped.test_set("en", "es")[0][:8]
    en_fr = Translator.from_pretrained(model, source_lang="en", target_lang="fr")
    before = en_fr.translate(lines)
    assert en_fr.translate(lines, source_lang="en", target_lang="es") == \
        Translator.from_pretrained(model, source_lang="en", target_lang="es").translate(lines)
    assert en_fr.translate(lines) == before                      # its own direction unchanged
    assert en_fr.translate(lines[0], target_lang="es") == en_fr.translate(lines[:1], target_lang="es")[0]
    bilingual = Translator.from_pretrained(converted["ende-sep"])
    with pytest.raises(DirectionError, match="translates en to de only"):
        bilingual.translate(lines, source_lang="fr")


@pytest.mark.parametrize("name", ["ende-sep", "m2m-enfres"])
def test_the_ctranslate2_directory_explains_itself(converted, ct2, name, tmp_path):
    """The export's README (add_source_eos, the target prefix, the cap) holds a Python call that, run
    as written, translates exactly as the harness's CTranslate2 adapter does."""
    import re
    import subprocess
    import sys

    from parity.peers import CTranslate2System

    out = ct2[name]
    text = (out / "README.md").read_text()
    assert "add_source_eos" in text and "Do not append" in text and "max_decoding_length" in text
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1).replace("THIS_DIR", str(out))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    system = CTranslate2System(out, ("en", "fr") if name == "m2m-enfres" else None)
    ids = system.tokenizer.encode("The file could not be opened.")
    best = system.generate([ids], {"beam": 5, "lenpen": 1.0, "max_len_b": 200})[0][0]
    assert r.stdout.strip() == system.decode(best) != ""


@requires_fairseq
def test_quiet_means_quiet_and_verbose_says_more(converted, tmp_path):
    """-q on a path that runs fairseq: none of torch's warnings about fairseq's loading and batching, none
    of fastBPE's lines (its C++ writes them to the process's standard error); -v shows them, and the
    port's load, tokenization and decoding times."""
    import subprocess
    import sys

    run = [sys.executable, "-m", "porting_cli", "example", "--lines", "1", "--out", str(tmp_path / "ex")]
    quiet = subprocess.run([*run, "-q"], capture_output=True, text=True, cwd=tmp_path)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == "" and "Loading codes" not in quiet.stdout, quiet.stderr
    loud = subprocess.run([*run, "-v"], capture_output=True, text=True, cwd=tmp_path)
    assert "Loading codes from" in loud.stderr and "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD" in loud.stderr
    (tmp_path / "in").write_text("Hello.\n")
    r = subprocess.run([sys.executable, "-m", "porting_cli", "translate", "--model", str(converted["ende-sep"]),
                        "--input", str(tmp_path / "in"), "-v"], capture_output=True, text=True)
    assert "DEBUG: loaded " in r.stderr and "tokenized in" in r.stderr and "lines/s" in r.stderr


def test_progress_is_a_bar_on_a_terminal_lines_elsewhere_and_nothing_under_quiet(converted, tmp_path, monkeypatch,
                                                                                capsys):
    """Long jobs were silent where standard error is no terminal (a log, CI): now a short line every
    porting.progress.INTERVAL_S seconds (0 here, so every update shows), with lines done, the rate and
    the time left; -q silences it."""
    import io

    from porting import progress

    class Terminal(io.StringIO):
        def isatty(self):
            return True
    monkeypatch.setattr(progress, "INTERVAL_S", 0.0)
    from porting_cli import main

    (tmp_path / "in").write_text("Hello.\nGood morning.\nThank you.\nSee you.\n")
    args = ["translate", "--model", str(converted["ende-sep"]), "--input", str(tmp_path / "in"), "--shards", "2",
            "--batch-size", "2"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    err = capsys.readouterr().err
    assert any(line.startswith("2 shards: 2/4 lines (50%), ") and line.endswith(" s left")
               for line in err.splitlines()), err
    assert main([*args, "--out", str(tmp_path / "b"), "-q"]) == 0
    assert "lines (" not in capsys.readouterr().err
    import logging

    ours, level = logging.getLogger("porting"), logging.getLogger("porting").level
    ours.setLevel(logging.INFO)                                  # as the commands set it without -q
    try:
        assert type(progress.progress_bar(10, "x", stream=Terminal())).__name__ == "tqdm"
    finally:
        ours.setLevel(level)


def test_threads_are_a_flag_and_an_argument(converted, tmp_path):
    """--threads on every command that decodes, threads= in the Python API (before: neither; a busy
    2-core machine took 21-31 s where one thread took 3.8 s)."""
    import subprocess
    import sys

    import torch

    from porting import Translator

    before = torch.get_num_threads()
    try:
        Translator.from_pretrained(converted["ende-sep"], threads=1)
        assert torch.get_num_threads() == 1
        with pytest.raises(ValueError, match="threads must be"):
            Translator.from_pretrained(converted["ende-sep"], threads=0)
    finally:
        torch.set_num_threads(before)
    (tmp_path / "in").write_text("Hello.\n")
    run = [sys.executable, "-m", "porting_cli", "translate", "--model", str(converted["ende-sep"]), "--input",
           str(tmp_path / "in"), "-v"]
    r = subprocess.run([*run, "--threads", "1"], capture_output=True, text=True)
    assert r.returncode == 0 and "kernels fast, 1 threads)" in r.stderr, r.stderr
    r = subprocess.run([*run, "--threads", "0"], capture_output=True, text=True)
    assert r.returncode == 2 and "--threads: 0: must be at least 1" in r.stderr
    for command in ("bleu", "search", "select"):
        assert "--threads" in dict(parsers())[command].format_help(), command
