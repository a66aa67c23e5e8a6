"""`porting translate` and the Translator API: every input line gives one output, bad input is
reported, never dropped."""
from __future__ import annotations

import json
import subprocess
import sys

import torch

from parity import shipped
from porting.translator import Translator


def translate(args, stdin: bytes):
    r = subprocess.run([sys.executable, "-m", "porting_cli", "translate", *map(str, args)],
                       input=stdin, capture_output=True)
    return r.returncode, r.stdout.decode("utf-8"), r.stderr.decode("utf-8")


def test_bad_lines_are_kept_and_reported(converted):
    stdin = "Delete the selected rows?\n\n\x07Click on the arrow.\n".encode() + b"Caf\xe9 au lait\n   \n"
    rc, out, err = translate(["--model", converted["ende-sep"], "--beam", "2"], stdin)
    assert rc == 0
    assert len(out.split("\n")) - 1 == 5
    assert "line 3: control characters removed" in err
    assert "line 4: invalid UTF-8" in err


def test_long_lines_error_or_truncate(converted):
    long = ("word " * 1100).strip()
    stdin = f"short line\n{long}\nanother\n{long}\n".encode()
    rc, out, err = translate(["--model", converted["ende-sep"], "--beam", "1", "--max-len-b", "5"], stdin)
    assert rc == 1 and out == ""
    assert "line 2:" in err and "line 4:" in err and "at most 1024" in err
    rc, out, err = translate(["--model", converted["ende-sep"], "--beam", "1", "--max-len-b", "5",
                              "--long-input", "truncate"], stdin)
    assert rc == 0 and len(out.splitlines()) == 4 and "truncated" in err


def test_jsonl_nbest_and_api_agree(converted):
    lines = shipped.test_set()[0][:6]
    rc, out, _ = translate(["--model", converted["ende-sep"], "--nbest", "3", "--format", "jsonl"],
                           ("\n".join(lines) + "\n").encode())
    assert rc == 0
    records = [json.loads(x) for x in out.splitlines()]
    assert [r["source"] for r in records] == lines
    from porting.files import json_line

    assert json.loads(json_line({"s": "a\u0085b\u2028c"})) == {"s": "a\u0085b\u2028c"}
    assert len(json_line({"s": "a\u0085b\u2028c\u2029"}).splitlines()) == 1
    t = Translator.from_pretrained(converted["ende-sep"])
    api = t.generate(lines, beam=5, nbest=3)
    for r, a in zip(records, api):
        assert len(r["hypotheses"]) == 3
        assert r["source_ids"] == a.source_ids and r["source_ids"][-1] == 2
        assert [h["tokens"] for h in r["hypotheses"]] == [h.tokens for h in a.hypotheses]
        assert [h["text"] for h in r["hypotheses"]] == a.texts
        scores = [h["score"] for h in r["hypotheses"]]
        assert scores == sorted(scores, reverse=True)
    assert t.translate(lines) == [r["hypotheses"][0]["text"] for r in records]


def test_ensemble_from_two_directories_equals_converted_ensemble(converted, tmp_path):
    """`--model A --model B` and one directory converted from both checkpoints are the same ensemble."""
    from porting_cli import main

    m = shipped.catalog()["ende-sep"]
    assert main(["convert", "fairseq", "--checkpoint", str(m.path / "model1.pt"), "--data-dir", str(m.path),
                 "--out", str(tmp_path / "m1")]) == 0
    assert main(["convert", "fairseq", "--checkpoint", str(m.path / "model2.pt"), "--data-dir", str(m.path),
                 "--out", str(tmp_path / "m2")]) == 0
    lines = shipped.test_set()[0][:5]
    two = Translator.from_pretrained(tmp_path / "m1", tmp_path / "m2").generate(lines)
    one = Translator.from_pretrained(converted["ende-sep-ensemble"]).generate(lines)
    assert [t.hypotheses[0].tokens for t in two] == [t.hypotheses[0].tokens for t in one]


def test_bfloat16_runs(converted):
    lines = shipped.test_set()[0][:4]
    rc, out, _ = translate(["--model", converted["ende-sep"], "--dtype", "bfloat16"], ("\n".join(lines) + "\n").encode())
    assert rc == 0 and len(out.splitlines()) == 4


def test_unknown_model_directory_is_a_clear_error(tmp_path):
    rc, out, err = translate(["--model", tmp_path], b"hello\n")
    assert rc == 1 and "no config.json" in err


def test_bad_generation_options_rejected(converted):
    rc, _, err = translate(["--model", converted["ende-sep"], "--beam", "2", "--nbest", "3"], b"hello\n")
    assert rc == 1 and "nbest" in err


def test_kernels_and_int8(converted):
    """fast (default) and exact kernels translate the same; int8 on this small model quantizes nothing
    (no product of it gains: porting/kernels/quantize.py), translates as float32 does and says so;
    int8-all runs every product in int8 and stays close; int8 with bfloat16 is refused with a clear error."""
    lines = shipped.test_set()[0][:20]
    stdin = ("\n".join(lines) + "\n").encode()
    fast = translate(["--model", converted["ende-sep"]], stdin)
    exact = translate(["--model", converted["ende-sep"], "--kernels", "exact"], stdin)
    int8 = translate(["--model", converted["ende-sep"], "--quantize", "int8"], stdin)
    int8_all = translate(["--model", converted["ende-sep"], "--quantize", "int8-all"], stdin)
    assert fast[0] == exact[0] == int8[0] == int8_all[0] == 0
    assert fast[1] == exact[1] == int8[1]
    assert "int8: decoder layers: float32 (too small to gain" in int8[2]
    assert "int8: output projection: float32" in int8[2] and "int8: encoder feed-forward: float32" in int8[2]
    assert "int8-all: decoder layers: int8" in int8_all[2] and "int8-all: output projection: int8" in int8_all[2]
    assert len(int8_all[1].splitlines()) == 20
    # an approximation, not a different model: most lines stay identical (85% measured on 100)
    assert sum(a == b for a, b in zip(int8_all[1].splitlines(), fast[1].splitlines())) >= 10
    assert int8_all[1] != fast[1]                                   # something was quantized
    rc, _, err = translate(["--model", converted["ende-sep"], "--quantize", "int8", "--dtype", "bfloat16"], stdin)
    assert rc == 1 and "int8 quantization needs --dtype float32" in err


def test_int8_quantizes_a_decoder_whole_or_not_at_all(converted, monkeypatch):
    """Where some of the decoder layers' products would gain and some would not, the layers stay
    float32 together (one C call a step); the output projection and the encoder are decided alone."""
    from porting.kernels import quantize
    from porting.model.load import load_ensemble
    from porting.translator import runtime_ensemble

    assert quantize.gains(torch.nn.Linear(1024, 1024)) and not quantize.gains(torch.nn.Linear(128, 1 << 14))
    # thresholds under which fc1/fc2 (128 x 512) and the output projection (128 x 7k) gain, out_proj (128 x 128) not
    monkeypatch.setattr(quantize, "MIN_INPUTS", 128)
    monkeypatch.setattr(quantize, "MIN_WEIGHTS", 128 * 512)
    ensemble = runtime_ensemble(load_ensemble(converted["ende-sep"])[1], "fast", "int8")
    model, fast = ensemble.models[0], ensemble.decoders[0]
    assert type(model.decoder.layers[0].fc1) is torch.nn.Linear and fast.layers_c is not None
    assert type(model.decoder.output_projection) is not torch.nn.Linear           # int8
    assert type(model.encoder.layers[0].fc1) is not torch.nn.Linear               # 128 x 512 and 512 x 128 gain here
    assert type(model.encoder.layers[0].self_attn.q_proj) is torch.nn.Linear      # 128 x 128 does not


def test_ensemble_members_must_share_every_vocabulary_id(converted, tmp_path):
    """Same sizes are not enough: a target dictionary with ids reordered changes what every member
    means by an id. Refused, naming the first id where the vocabularies part."""
    import shutil

    import pytest

    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(converted["ende-sep"], a)
    shutil.copytree(converted["ende-sep"], b)
    vocab = json.loads((b / "vocab-tgt.json").read_text(encoding="utf-8"))
    by_id = sorted(vocab, key=vocab.get)
    moved = by_id[100:300]                                   # 200 ids, reordered
    vocab.update({s: vocab[t] for s, t in zip(moved, moved[::-1])})
    (b / "vocab-tgt.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    Translator.from_pretrained(a, a)                         # the same vocabularies: fine
    with pytest.raises(ValueError, match=r"target vocabularies differ first at id 100: "):
        Translator.from_pretrained(a, b)
    rc, out, err = translate(["--model", a, "--model", b], b"Delete the selected rows?\n")
    assert rc == 1 and out == "" and "differ first at id 100" in err and "Traceback" not in err


def test_jsonl_records_survive_readers_that_split_on_unicode_line_breaks(converted):
    lines = ["Delete the\u2028selected rows?", "Click on the arrow\u2029."]
    rc, out, err = translate(["--model", converted["ende-sep"], "--beam", "2", "--format", "jsonl"],
                             "".join(line + "\n" for line in lines).encode())
    assert rc == 0
    records = [json.loads(x) for x in out.splitlines()]        # str.splitlines: the strictest reader
    assert [r["source"] for r in records] == lines
    from porting.files import json_line

    assert json.loads(json_line({"s": "a\u0085b\u2028c"})) == {"s": "a\u0085b\u2028c"}
    assert len(json_line({"s": "a\u0085b\u2028c\u2029"}).splitlines()) == 1


def test_nonsense_generation_options_are_one_line_errors(converted):
    for flag in (["--lenpen", "nan"], ["--unkpen", "nan"], ["--unkpen=-inf"]):
        rc, out, err = translate(["--model", converted["ende-sep"], *flag], b"Delete the selected rows?\n")
        assert rc == 1 and out == "" and "must be finite" in err and "Traceback" not in err, flag


def test_api_reads_the_models_generation_defaults_as_the_command_does(converted, tmp_path):
    """A tuned generation_config.json (what `search --write-best` writes) is what `translate` and
    `Translator.translate` both run with; explicit options still override it."""
    import os
    import shutil

    from porting import Translator as FromPackage
    from porting_cli.search import write_best

    assert FromPackage is Translator
    model = tmp_path / "model"
    shutil.copytree(converted["ende-sep"], model)
    write_best(model, {"beam": 3, "lenpen": 0.6})
    umask = os.umask(0)
    os.umask(umask)
    assert (model / "generation_config.json").stat().st_mode & 0o777 == 0o666 & ~umask
    lines, _ = shipped.test_set()
    lines = lines[:30]
    tuned = Translator.from_pretrained(model)
    assert tuned.options()["lenpen"] == 0.6 and tuned.options(lenpen=1.0)["lenpen"] == 1.0
    ours = tuned.translate(lines)
    rc, out, _ = translate(["--model", model], "".join(line + "\n" for line in lines).encode())
    assert rc == 0 and out.splitlines() == ours
    assert ours == Translator.from_pretrained(converted["ende-sep"]).translate(lines, beam=3, lenpen=0.6)


def test_a_string_is_one_line_not_its_characters(converted):
    t = Translator.from_pretrained(converted["ende-sep"])
    one = t.translate("Delete the selected rows?")
    assert isinstance(one, str) and one == t.translate(["Delete the selected rows?"])[0]
    assert t.generate("Delete the selected rows?").source == "Delete the selected rows?"


def test_nbest_needs_jsonl(converted):
    rc, out, err = translate(["--model", converted["ende-sep"], "--beam", "3", "--nbest", "3"], b"hello\n")
    assert rc == 1 and out == "" and "--nbest 3 needs --format jsonl" in err


def test_lines_are_translated_as_they_arrive(converted, tmp_path):
    """From a pipe, a line comes back before the input ends (fairseq-interactive's behaviour), and the
    results equal the whole-file path's (issue 19, item 7)."""
    import select

    lines = shipped.test_set()[0][:5]
    (tmp_path / "src").write_text("".join(f"{x}\n" for x in lines), encoding="utf-8")
    args = [sys.executable, "-m", "porting_cli", "translate", "--model", str(converted["ende-sep"])]
    whole = subprocess.run([*args, "--input", str(tmp_path / "src")], capture_output=True, check=True).stdout
    p = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    got = []
    try:
        for i, line in enumerate(lines):
            p.stdin.write(line.encode() + b"\n")
            p.stdin.flush()
            assert select.select([p.stdout], [], [], 120)[0], f"no translation of line {i + 1} while the input is open"
            got.append(p.stdout.readline())
    finally:
        p.stdin.close()
    assert p.wait(timeout=120) == 0 and p.stdout.read() == b""
    assert b"".join(got) == whole


def test_what_has_arrived_is_batched_up_to_the_buffer_size():
    import os

    from porting_cli.translate import arriving

    r, w = os.pipe()
    os.write(w, b"".join(b"line %d\n" % i for i in range(10)) + b"no newline")
    os.close(w)
    chunks = list(arriving(r, buffer_size=4))
    os.close(r)
    assert [len(c) for c in chunks] == [4, 4, 3]               # all was ready: full buffers, no line lost
    assert chunks[-1][-1] == b"no newline"


def _stderr_on_a_terminal(args: list[str]) -> str:
    """Run a command with standard error on a pseudo-terminal; what it showed there."""
    import fcntl
    import os
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))   # a real terminal's size, not 0x0
    p = subprocess.Popen([sys.executable, "-m", "porting_cli", *args], stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    shown = b""
    while True:
        try:
            data = os.read(master, 1 << 16)
        except OSError:                               # the terminal closed: the process is gone
            break
        if not data:
            break
        shown += data
    os.close(master)
    assert p.wait(timeout=300) == 0, shown
    return shown.decode("utf-8", "replace")


def test_one_progress_display_on_a_terminal_none_when_piped(converted, tmp_path):
    """A bar with an ETA on a terminal; nothing in a pipe or log (issue 19, item 6)."""
    lines = shipped.test_set()[0][:24]
    (tmp_path / "src").write_text("".join(f"{x}\n" for x in lines), encoding="utf-8")
    (tmp_path / "ref").write_text("".join(f"{x}\n" for x in shipped.test_set()[1][:24]), encoding="utf-8")
    model = str(converted["ende-sep"])
    args = ["translate", "--model", model, "--input", str(tmp_path / "src"), "--batch-size", "4"]
    shown = _stderr_on_a_terminal(args)
    assert "translating" in shown and "/24 [" in shown and "<" in shown           # n/total [elapsed<ETA
    piped = subprocess.run([sys.executable, "-m", "porting_cli", *args], capture_output=True, text=True)
    assert piped.returncode == 0 and piped.stderr == ""
    shown = _stderr_on_a_terminal(["search", "--model", model, "--input", str(tmp_path / "src"), "--reference",
                                   str(tmp_path / "ref"), "--search", "beam=1:2", "--batch-size", "4",
                                   "--out", str(tmp_path / "s")])
    assert "2 settings" in shown and "/48 [" in shown and "0setting" not in shown  # moves inside a setting


def test_kernels_command_says_what_runs_in_c(converted, capsys):
    """`porting kernels --model`: which parts of the model's decoding run as one C call."""
    import pytest

    from porting.kernels import native
    from porting_cli import main

    if not native.available():
        pytest.skip(f"few-row kernels unavailable: {native.unavailable_reason()}")
    assert main(["kernels", "--model", str(converted["ende-sep"])]) == 0
    out = capsys.readouterr().out
    for part in ("encoder layers as one C call: yes", "decoder layers as one C call a step: yes",
                 "output projection fused with the candidate choice: yes", "the search's loop as one C call: yes",
                 "`porting translate` starts without torch (porting/lean.py): yes"):
        assert part in out, out
    assert main(["kernels", "--model", str(converted["ende-sep-ensemble"])]) == 0
    out = capsys.readouterr().out
    assert "the search's loop as one C call: no (an ensemble)" in out
    assert "without torch (porting/lean.py): no (an ensemble)" in out
