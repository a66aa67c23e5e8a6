"""Nothing silently wrong, round two (issue 30): what a hostile user found accepted, trusted or
answered with a traceback, each now refused, checked or explained in one line."""
from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest

from porting_cli import main


def relabel(path: Path, tensor: str, dtype: str) -> None:
    """A safetensors file with one tensor's dtype label changed in its header, its bytes kept."""
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    header[tensor]["dtype"] = dtype
    text = json.dumps(header).encode()
    text += b" " * (n - len(text)) if len(text) <= n else b""
    path.write_bytes(struct.pack("<Q", len(text)) + text + data[8 + n:])


# ---------------------------------------------------------------- item 3: integer weights

def test_integer_weights_are_refused_by_convert_transformers_and_the_loader(converted, tmp_path, capsys):
    """The same bytes relabelled I32: no longer weights. convert transformers refuses the directory and
    the loader the converted model, each naming the tensor; nothing is written."""
    from porting.model.load import LoadError, load_ensemble

    hub = tmp_path / "hub"
    shutil.copytree(converted["m2m-enfres"], hub)
    config = json.loads((hub / "config.json").read_text())
    del config["porting"]
    (hub / "config.json").write_text(json.dumps(config))
    key = "model.encoder.layers.0.fc1.weight"
    relabel(hub / "model.safetensors", key, "I32")
    assert main(["convert", "transformers", "--model", str(hub), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert f"{key} is int32, not a float weight" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()

    model = tmp_path / "model"
    shutil.copytree(converted["m2m-enfres"], model)
    relabel(model / "model.safetensors", key, "I32")
    try:
        load_ensemble(model)
    except LoadError as e:
        assert f"{key} is int32" in str(e)
    else:
        raise AssertionError("an integer tensor loaded as a weight")
    (tmp_path / "in.en").write_text("Hello.\n")
    capsys.readouterr()
    assert main(["translate", "--model", str(model), "--source-lang", "en", "--target-lang", "fr",
                 "--input", str(tmp_path / "in.en")]) == 1
    err = capsys.readouterr().err
    assert f"{key} is int32" in err and "Traceback" not in err


# ---------------------------------------------------------------- item 2: the SentencePiece model the converter would refuse

def test_translate_refuses_the_sentencepiece_model_convert_refuses(converted, tmp_path, capsys):
    """Another SentencePiece model swapped into a converted directory: its pieces are mostly not the
    dictionary's, so every sentence would be <unk>s. Loading checks what conversion checked."""
    from tests.fairseq_models import sentencepiece_files

    model = tmp_path / "model"
    shutil.copytree(converted["m2m-enfres"], model)
    other, _ = sentencepiece_files("bpe")
    shutil.copy(other, model / "sentencepiece.bpe.model")
    (tmp_path / "in.en").write_text("Hello.\n")
    assert main(["translate", "--model", str(model), "--source-lang", "en", "--target-lang", "fr",
                 "--input", str(tmp_path / "in.en")]) == 1
    err = capsys.readouterr().err
    assert "sentencepiece.bpe.model fits vocab.json poorly" in err and err.count("\n") == 1, err
    # the shipped pair still loads
    assert main(["translate", "--model", str(converted["m2m-enfres"]), "--source-lang", "en", "--target-lang", "fr",
                 "--input", str(tmp_path / "in.en"), "-q"]) == 0


# ---------------------------------------------------------------- items 4 and 7: kept shards are checked

SHARDS = 4


@pytest.fixture(scope="module")
def bulk_job(converted, tmp_path_factory):
    """A finished bulk job whose store is kept (as an interrupted one would leave it, every shard
    done), and the output of a clean run."""
    from parity import shipped
    from porting.engine.shards import ShardStore

    d = tmp_path_factory.mktemp("bulk")
    (d / "in.en").write_text("\n".join(shipped.test_set()[0][:40]) + "\n", encoding="utf-8")
    args = ["translate", "--model", str(converted["ende-sep"]), "--input", str(d / "in.en"), "--out", str(d / "out"),
            "--shards", str(SHARDS), "--batch-size", "4", "-q"]
    remove = ShardStore.remove
    ShardStore.remove = lambda self: None
    try:
        assert main(args) == 0
    finally:
        ShardStore.remove = remove
    clean = (d / "out").read_text(encoding="utf-8")
    (d / "out").unlink()
    return d, args, clean


def _damaged(bulk_job, tmp_path, damage) -> tuple[int, str, str]:
    """Resume a copy of the kept store after `damage(store_dir)`: (exit, stderr, output)."""
    import subprocess
    import sys

    d, args, _ = bulk_job
    work = tmp_path / "w"
    shutil.copytree(d, work)
    damage(work / "out.shards")
    args = [a.replace(str(d), str(work)) for a in args if a != "-q"]
    r = subprocess.run([sys.executable, "-m", "porting_cli", *args, "--resume"], capture_output=True, text=True)
    return r.returncode, r.stderr, (work / "out").read_text(encoding="utf-8") if (work / "out").exists() else ""


def _edit(store: Path, shard: int, change) -> None:
    path = store / f"shard-{shard:05d}.json"
    kept = json.loads(path.read_text(encoding="utf-8"))
    change(kept)
    path.write_text(json.dumps(kept), encoding="utf-8")


def _swap(store: Path) -> None:
    a, b = store / "shard-00000.json", store / "shard-00001.json"
    text = a.read_text()
    a.write_text(b.read_text())
    b.write_text(text)


def _plan(store: Path, change) -> None:
    job = json.loads((store / "job.json").read_text())
    change(job["plan"])
    (store / "job.json").write_text(json.dumps(job))


DAMAGE = {
    "a line edited": (lambda s: _edit(s, 1, lambda k: k["outputs"].__setitem__(0, "edited")),
                      "shard-00001.json: its outputs do not match their checksum"),
    "two shards swapped": (_swap, "shard-00000.json: holds shard 1's outputs"),
    "a shard cut to 50 bytes": (lambda s: (s / "shard-00002.json").write_bytes((s / "shard-00002.json").read_bytes()[:50]),
                                "shard-00002.json: not readable"),
    "a shard 3 items short": (lambda s: _edit(s, 3, lambda k: k["outputs"].__delitem__(slice(0, 3))),
                              "shard-00003.json: holds"),
    "non-string items": (lambda s: _edit(s, 0, lambda k: k["outputs"].__setitem__(1, 7)),
                         "shard-00000.json: its outputs do not match their checksum"),
    "a plan with an index twice": (lambda s: _plan(s, lambda p: p[0].append(p[1][0])), "line index"),
    "a plan with index 5000": (lambda s: _plan(s, lambda p: p[0].__setitem__(0, 5000)), "past the input"),
    "job.json cut": (lambda s: (s / "job.json").write_bytes((s / "job.json").read_bytes()[:20]), "job.json: not readable"),
}


@pytest.mark.parametrize("name", DAMAGE)
def test_a_damaged_store_is_never_used_and_never_ends_the_job(bulk_job, tmp_path, name):
    """Each damage is named in one warning, what it touched runs again, and the output is the clean
    run's, byte for byte (before: edited lines came out, swapped shards misplaced 32 lines, a cut shard
    ended every --resume with a JSON error naming no file, a bad plan gave a traceback)."""
    damage, says = DAMAGE[name]
    rc, err, out = _damaged(bulk_job, tmp_path, damage)
    assert rc == 0 and "Traceback" not in err, err
    assert any(line.startswith("warning: ") and says in line for line in err.splitlines()), err
    assert out == bulk_job[2]


# ---------------------------------------------------------------- item 5: a cluster that never answers

def test_joining_a_cluster_that_never_answers_gives_up_in_bounded_time(converted, tmp_path):
    """Before: Ray retried 127.0.0.1:1 for more than 120 s, printing only its GCS warnings. Now the
    address is asked first, for --ray-timeout seconds (30 by default), then one line names it."""
    import subprocess
    import sys
    import time

    from porting.engine.on_ray import CONNECT_TIMEOUT_S

    (tmp_path / "in.en").write_text("Hello.\n")
    run = [sys.executable, "-m", "porting_cli", "translate", "--model", str(converted["ende-sep"]), "--input",
           str(tmp_path / "in.en"), "--engine", "ray", "--ray-address", "127.0.0.1:1"]
    start = time.monotonic()
    r = subprocess.run([*run, "--out", str(tmp_path / "out"), "--ray-timeout", "2"], capture_output=True, text=True,
                       timeout=60)
    assert time.monotonic() - start < 30 and r.returncode == 1
    assert "error: cannot join the Ray cluster at 127.0.0.1:1: nothing answered at 127.0.0.1:1 within 2 s" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "out").exists()
    assert CONNECT_TIMEOUT_S == 30
    r = subprocess.run([*run[:-4], "--ray-timeout", "2"], capture_output=True, text=True)
    assert r.returncode == 2 and "--ray-timeout bounds joining a cluster" in r.stderr


# ---------------------------------------------------------------- item 6: convert transformers, one line for every broken input

def tiny_fsmt(d: Path) -> Path:
    """A tiny FSMT directory as transformers writes one (random weights; the converter does not care),
    with fastBPE-style vocabularies FSMTTokenizer reads."""
    from transformers import FSMTConfig, FSMTForConditionalGeneration

    pieces = ["a</w>", "b</w>", "ab</w>", "a", "b", "c</w>", "the</w>", "th", "e</w>", "t", "h"]
    vocab = {s: i for i, s in enumerate(["<s>", "<pad>", "</s>", "<unk>", *pieces])}
    config = FSMTConfig(langs=["en", "de"], src_vocab_size=len(vocab), tgt_vocab_size=len(vocab), d_model=8,
                        encoder_layers=1, decoder_layers=1, encoder_ffn_dim=16, decoder_ffn_dim=16,
                        encoder_attention_heads=2, decoder_attention_heads=2, max_position_embeddings=32)
    FSMTForConditionalGeneration(config).save_pretrained(d)
    for side in ("src", "tgt"):
        (d / f"vocab-{side}.json").write_text(json.dumps(vocab), encoding="utf-8")
    (d / "merges.txt").write_text("a b</w> 10\nt h 9\nth e</w> 8\n", encoding="utf-8")
    return d


CASES = {          # the list: each one line, nothing written
    "config.json a list": lambda d: (d / "config.json").write_text("[1]"),
    "config.json empty": lambda d: (d / "config.json").write_text(""),
    "d_model missing": lambda d: _json(d / "config.json", lambda c: c.pop("d_model")),
    "langs missing": lambda d: _json(d / "config.json", lambda c: c.pop("langs")),
    "random bytes in merges.txt": lambda d: (d / "merges.txt").write_bytes(bytes(range(128, 256))),
    "a merges.txt line foo": lambda d: (d / "merges.txt").write_text("foo\n"),
    "vocab-src.json a list": lambda d: (d / "vocab-src.json").write_text("[1, 2]"),
    "vocab-src.json a symlink to a non-JSON file": lambda d: (
        (d / "other").write_text("hello"), (d / "vocab-src.json").unlink(), (d / "vocab-src.json").symlink_to(d / "other")),
}


def _json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


@pytest.fixture(scope="module")
def fsmt_dir(tmp_path_factory):
    return tiny_fsmt(tmp_path_factory.mktemp("fsmt") / "hub")


def _convert(hub: Path, out: Path, capsys) -> tuple[int, str]:
    capsys.readouterr()
    rc = main(["convert", "transformers", "--model", str(hub), "--out", str(out), "-q"])
    return rc, capsys.readouterr().err


@pytest.mark.parametrize("case", CASES)
def test_each_broken_transformers_directory_is_one_error(fsmt_dir, tmp_path, capsys, case):
    hub = tmp_path / "hub"
    shutil.copytree(fsmt_dir, hub)
    CASES[case](hub)
    rc, err = _convert(hub, tmp_path / "out", capsys)
    assert rc == 1 and err.startswith("error: ") and "Traceback" not in err and not (tmp_path / "out").exists(), err


def test_convert_ctranslate2_without_a_vocabulary_is_one_error(converted, tmp_path, capsys):
    for name, missing in (("ende-sep", "vocab-tgt.json"), ("m2m-enfres", "vocab.json")):
        model = tmp_path / name
        shutil.copytree(converted[name], model)
        (model / missing).unlink()
        capsys.readouterr()
        assert main(["convert", "ctranslate2", "--model", str(model), "--out", str(tmp_path / f"{name}.ct2")]) == 1
        err = capsys.readouterr().err
        assert f"{missing}: not readable JSON" in err and "Traceback" not in err
        assert not (tmp_path / f"{name}.ct2").exists()


WRONG_VALUES = [None, "x", [], {}, -1, 0, 1.5, True, 10 ** 12, ["en"], {"a": 1}]


def mutate(d: Path, rng) -> str:
    """One random damage to a directory: a JSON field deleted or given a wrong type, a file truncated,
    emptied, deleted or with bytes flipped. Returns what was done."""
    files = sorted(p.name for p in d.iterdir())
    name = rng.choice(files)
    path = d / name
    kind = rng.choice(["field", "field", "truncate", "empty", "flip", "delete"] if name.endswith(".json")
                      else ["truncate", "empty", "flip", "delete"])
    if kind == "field":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            kind = "flip"
        else:
            if isinstance(data, dict) and data:
                key = rng.choice(sorted(data))
                if rng.random() < 0.4:
                    del data[key]
                    path.write_text(json.dumps(data))
                    return f"{name}: {key} deleted"
                data[key] = rng.choice(WRONG_VALUES)
                path.write_text(json.dumps(data))
                return f"{name}: {key} = {data[key]!r}"
            kind = "flip"
    raw = path.read_bytes()
    if kind == "truncate" and raw:
        path.write_bytes(raw[:rng.randrange(len(raw))])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "delete":
        path.unlink()
    else:
        data = bytearray(raw)
        for _ in range(rng.randint(1, 5)):
            if data:
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(data))
    return f"{name}: {kind}"


def test_a_thousand_mutations_of_a_transformers_directory(fsmt_dir, tmp_path, capsys):
    """1,000 random damages (1 to 3 each) to a valid directory: each converts (and then loads and
    tokenizes with the port) or is refused with an error; never a traceback, never a half-written output."""
    import random

    from porting.model.load import load_ensemble
    from porting.tokenizer import open_tokenizer

    rng = random.Random(30)
    outcomes = {0: 0, 1: 0}
    for n in range(1000):
        hub, out = tmp_path / f"hub{n}", tmp_path / f"out{n}"
        shutil.copytree(fsmt_dir, hub)
        done = [mutate(hub, rng) for _ in range(rng.randint(1, 3))]
        try:
            rc, err = _convert(hub, out, capsys)
        except Exception as e:                      # a traceback: the case is named
            raise AssertionError(f"{done}: {type(e).__name__}: {e}") from e
        assert rc in (0, 1) and "Traceback" not in err, (done, err)
        if rc == 0:
            load_ensemble(out)
            open_tokenizer(out).encode("the ab")
        else:
            assert err.startswith("error: ") and not out.exists(), (done, err)
        outcomes[rc] += 1
        shutil.rmtree(hub)
        shutil.rmtree(out, ignore_errors=True)
    assert outcomes[0] > 50 and outcomes[1] > 300, outcomes     # both paths were exercised
