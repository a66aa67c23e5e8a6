"""`porting bleu`, `porting search`, `porting select`: correct scores, one encoder pass for a whole
grid, resumable, parallel, and clear errors."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from parity import shipped
from porting.evaluation.grid import GridError, parse_grid, run_grid
from porting.evaluation.scoring import DataError, read_parallel, score
from porting.translator import Translator
from porting_cli import main

LINES = 40


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    src, ref = shipped.test_set(split="valid")
    (d / "valid.en").write_text("\n".join(src[:LINES]) + "\n", encoding="utf-8")
    (d / "valid.de").write_text("\n".join(ref[:LINES]) + "\n", encoding="utf-8")
    src, ref = shipped.test_set()
    (d / "test.en").write_text("\n".join(src[:LINES]) + "\n", encoding="utf-8")
    (d / "test.de").write_text("\n".join(ref[:LINES]) + "\n", encoding="utf-8")
    return d


def test_grid_parsing_and_its_errors():
    grid = parse_grid("beam=5:8 lenpen=0.6:1.0 early_stopping=true:0")
    assert len(grid) == 8 and grid[0] == {"beam": 5, "lenpen": 0.6, "early_stopping": "true"}
    assert {g["early_stopping"] for g in grid} == {"true", "false"}
    with pytest.raises(GridError) as e:
        parse_grid("beam=5:x temperature=1 early_stopping=maybe lenpen")
    text = str(e.value)
    assert "beam='x'" in text and "unknown search key 'temperature'" in text and "maybe" in text and "'lenpen'" in text


def test_data_errors_all_reported(tmp_path):
    (tmp_path / "a").write_text("one\ntwo\n")
    (tmp_path / "b").write_text("eins\n")
    (tmp_path / "empty").write_text("")
    with pytest.raises(DataError, match="line counts differ"):
        read_parallel(tmp_path / "a", tmp_path / "b")
    with pytest.raises(DataError) as e:
        read_parallel(tmp_path / "empty", tmp_path / "missing")
    assert "empty file" in str(e.value) and "no such file" in str(e.value)


def test_bleu_command_scores_the_port(converted, data, tmp_path, capsys):
    assert main(["bleu", "--model", str(converted["ende-sep"]), "--input", str(data / "test.en"),
                 "--reference", str(data / "test.de"), "--output", str(tmp_path / "hyp"), "--json"]) == 0
    bleu, chrf = json.loads(capsys.readouterr().out)
    hyps = (tmp_path / "hyp").read_text(encoding="utf-8").splitlines()
    refs = (data / "test.de").read_text(encoding="utf-8").splitlines()
    assert bleu["score"] == round(score(hyps, refs).bleu, 2) and "tok:13a" in bleu["signature"]
    assert chrf["name"] == "chrF2" and chrf["score"] == round(score(hyps, refs).chrf, 2)
    assert main(["bleu", "--model", str(converted["ende-sep"]), "--input", str(data / "test.en"),
                 "--reference", str(tmp_path / "hyp-missing")]) == 1


def test_bleu_prints_what_sacrebleu_prints(data, tmp_path):
    """--hypotheses scores a file; every sacreBLEU option we take gives sacreBLEU's own output, byte
    for byte, against its command line run on the same files (issue 19, item 15)."""
    refs = data / "test.de"
    lines = refs.read_text(encoding="utf-8").splitlines()[:60]
    (tmp_path / "ref").write_text("".join(f"{x}\n" for x in lines), encoding="utf-8")
    (tmp_path / "ref2").write_text("".join(f"{x.replace(' ein ', ' eine ')}\n" for x in lines), encoding="utf-8")
    (tmp_path / "hyp").write_text("".join(f"{x.replace('der', 'Die')}\n" for x in lines), encoding="utf-8")
    ref, ref2, hyp = (str(tmp_path / n) for n in ("ref", "ref2", "hyp"))
    sacrebleu = str(Path(sys.executable).with_name("sacrebleu"))
    for refs, ours, theirs in (
            ([ref], ["--json", "-m", "bleu", "chrf", "ter"], ["-m", "bleu", "chrf", "ter", "-w", "2"]),
            ([ref], ["--tokenize", "intl", "--lowercase", "-m", "bleu", "--width", "3"],
             ["-tok", "intl", "-lc", "-w", "3", "-f", "text"]),
            ([ref, ref2], ["-m", "bleu", "chrf", "--json"], ["-m", "bleu", "chrf", "-w", "2"]),
            ([ref], ["--confidence", "--confidence-n", "200", "-m", "bleu"],
             ["--confidence", "-cin", "200", "-w", "2", "-f", "text"])):
        got = subprocess.run([sys.executable, "-m", "porting_cli", "bleu", "--hypotheses", hyp, "--reference", *refs, *ours],
                             capture_output=True, text=True)
        want = subprocess.run([sacrebleu, *refs, "-i", hyp, *theirs], capture_output=True, text=True)
        assert got.returncode == 0 and want.returncode == 0, got.stderr + want.stderr
        assert got.stdout == want.stdout, ours


def test_bleu_refuses_what_it_would_ignore(data, tmp_path):
    def run(*a):
        return subprocess.run([sys.executable, "-m", "porting_cli", "bleu", *a], capture_output=True, text=True)

    r = run("--hypotheses", str(data / "test.de"), "--reference", str(data / "test.de"), "--beam", "3", "--input", "x",
            "--out", "y")
    assert r.returncode == 2 and "--beam, --input, --out: only apply when translating" in r.stderr
    r = run("--hypotheses", str(data / "test.de"), "--reference", str(data / "test.de"), "--confidence-n", "50")
    assert r.returncode == 2 and "add --confidence" in r.stderr
    for flag, value in (("--width", "-3"), ("--confidence-n", "0")):
        r = run("--hypotheses", str(data / "test.de"), "--reference", str(data / "test.de"), flag, value)
        assert r.returncode == 2 and "must be at least" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "short").write_text("eins\n", encoding="utf-8")
    r = run("--hypotheses", str(data / "test.de"), "--reference", str(tmp_path / "short"))
    assert r.returncode == 1 and "line counts differ" in r.stderr and "Traceback" not in r.stderr


def test_grid_runs_the_encoder_once_and_matches_independent_runs(converted, data, tmp_path, monkeypatch):
    from porting.generation.ensemble import Ensemble

    calls = []
    real = Ensemble.encode
    monkeypatch.setattr(Ensemble, "encode", lambda self, src: calls.append(src.shape) or real(self, src))
    src, ref = read_parallel(data / "valid.en", data / "valid.de")
    settings = parse_grid("beam=2:4 lenpen=0.6:1.2")
    records = run_grid([converted["ende-sep"]], src, ref, settings, {}, tmp_path / "state.jsonl", batch_size=16)
    assert len(calls) == 3  # 40 lines in batches of 16: each batch encoded once for all 4 settings
    t = Translator.from_pretrained(converted["ende-sep"])
    for s, r in zip(settings, records):
        assert r["bleu"] == round(score(t.translate(src, batch_size=16, **s), ref).bleu, 2)


def test_search_resumes_and_parallel_agrees(converted, data, tmp_path, monkeypatch):
    from porting.engine.worker import Worker

    src, ref = read_parallel(data / "valid.en", data / "valid.de")
    state = tmp_path / "state.jsonl"
    first = run_grid([converted["ende-sep"]], src, ref, parse_grid("beam=2 lenpen=0.6:1.0"), {}, state)
    ran = []
    real = Worker.run
    monkeypatch.setattr(Worker, "run", lambda self, task, progress=None: ran.append(task) or real(self, task, progress))
    counted = []                                # the progress display's updates, in source lines
    both = run_grid([converted["ende-sep"]], src, ref, parse_grid("beam=2:3 lenpen=0.6:1.0"), {}, state,
                    batch_size=8, progress=counted.append)
    assert len(ran) == 2 and both[:2] == first  # the two finished settings came from the state file
    assert counted[0] == 2 * len(src) and sum(counted) == 4 * len(src) and len(counted) > 3   # moves inside a setting
    monkeypatch.undo()  # worker processes must be able to pickle the real function
    counted.clear()
    parallel = run_grid([converted["ende-sep"]], src, ref, parse_grid("beam=2:3 lenpen=0.6:1.0"), {},
                        tmp_path / "other.jsonl", jobs=2, progress=counted.append)
    assert [(r["setting"], r["bleu"]) for r in parallel] == [(r["setting"], r["bleu"]) for r in both]
    assert sum(counted) == 4 * len(src)


def test_search_command_reports_on_test_and_writes_best(converted, data, tmp_path, capsys):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(converted["ende-sep"], model)
    rc = main(["search", "--model", str(model), "--input", str(data / "valid.en"), "--reference", str(data / "valid.de"),
               "--search", "beam=1:3 lenpen=0.6:1.0", "--test-input", str(data / "test.en"),
               "--test-reference", str(data / "test.de"), "--out", str(tmp_path / "out"), "--write-best", "--force"])
    assert rc == 0
    out = capsys.readouterr().out
    assert out.index("bleu | chrf | beam | lenpen") < out.index("reported on")
    assert "never tuned on" in out and "paired bootstrap p =" in out
    report = json.loads((tmp_path / "out" / "results.json").read_text())
    assert sorted((r["setting"]["beam"], r["setting"]["lenpen"]) for r in report["results"]) == [
        (1, 0.6), (1, 1.0), (3, 0.6), (3, 1.0)]
    best = max(report["results"], key=lambda r: (r["bleu"], r["chrf"]))
    assert report["best"] == best["setting"] and report["best_bleu"] == best["bleu"] and "test" in report
    gen = json.loads((model / "generation_config.json").read_text())
    assert gen["fairseq"]["beam"] == report["best"]["beam"] and gen["num_beams"] == report["best"]["beam"]
    from transformers import GenerationConfig

    # still written as transformers writes it
    GenerationConfig.from_pretrained(model).save_pretrained(tmp_path / "resaved")
    assert (tmp_path / "resaved" / "generation_config.json").read_bytes() == (model / "generation_config.json").read_bytes()
    assert Translator.default_options(model)["lenpen"] == report["best"]["lenpen"]
    assert main(["search", "--model", str(model), "--input", str(data / "valid.en"), "--reference",
                 str(data / "valid.de"), "--search", "bogus=1"]) == 1


def test_select_scores_each_checkpoint_and_the_ensemble(data, tmp_path, capsys):
    m = shipped.catalog()["ende-sep"]
    args = ["select", "--checkpoint", str(m.path / "model1.pt"), "--checkpoint", str(m.path / "model2.pt"),
            "--data-dir", str(m.path), "--input", str(data / "valid.en"), "--reference", str(data / "valid.de"),
            "--out", str(tmp_path / "sel"), "--beam", "2"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "model1" in out and "model2" in out and "ensemble of all" in out and "best:" in out
    assert f"the conversions are in {tmp_path / 'sel'}" in out
    stamp = (tmp_path / "sel" / "model1" / "model.safetensors").stat().st_mtime_ns
    assert main(args) == 0  # second run reuses the conversions
    assert (tmp_path / "sel" / "model1" / "model.safetensors").stat().st_mtime_ns == stamp


def test_paired_bootstrap_identical_and_different():
    from porting.evaluation.scoring import paired_bootstrap

    refs = ["the cat sat on the mat", "a dog barks", "it rains today", "we go home now"] * 10
    same = paired_bootstrap(refs, list(refs), refs, samples=200)
    # sacreBLEU alone would say p = 1/201 for a system against itself
    assert same["identical"] and same["p_value"] == 1.0
    worse = [h.replace("cat", "dog").replace("home", "out") for h in refs]
    diff = paired_bootstrap(refs, worse, refs, samples=200)
    assert not diff["identical"] and diff["p_value"] < 0.05


def test_one_line_rule_for_every_command(tmp_path):
    """Lines end at "\\n" only, as `wc -l`, fairseq and `porting translate` count them: a U+2028 in
    a source line and a form feed in a reference line stay inside their lines (str.splitlines made
    both files one line longer, paired every later line with the wrong one, and said nothing)."""
    src, ref = tmp_path / "src", tmp_path / "ref"
    src.write_text("one\ntwo\u2028still two\nthree\n", encoding="utf-8")
    ref.write_text("eins\nzwei\nd\x0crei\r\n", encoding="utf-8")
    source, reference = read_parallel(src, ref)
    assert source == ["one", "two\u2028still two", "three"] and reference == ["eins", "zwei", "d\x0crei"]
    ref.write_text("eins\nzwei\n", encoding="utf-8")
    with pytest.raises(DataError, match="line counts differ"):
        read_parallel(src, ref)


def test_resumed_search_notices_weights_changed_in_place(converted, tmp_path):
    """The fingerprint covers whole files: one weight zeroed in place, past the first 64 KiB and
    without changing the file's size, makes the finished settings of the old weights stale."""
    import shutil

    from porting.evaluation.grid import fingerprint

    model = tmp_path / "model"
    shutil.copytree(converted["ende-sep"], model)
    before = fingerprint([model], ["a"], ["b"], {})
    weights = model / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-4096:-4092] = b"\0\0\0\0"
    weights.write_bytes(bytes(data))
    changed = fingerprint([model], ["a"], ["b"], {})
    assert changed != before
    (model / "README.md").write_text("a card edited by hand")     # not what a result depends on
    weights.write_bytes(weights.read_bytes())
    assert fingerprint([model], ["a"], ["b"], {}) == changed


def test_torn_last_state_record_is_skipped_with_a_warning(converted, data, tmp_path):
    src, ref = read_parallel(data / "valid.en", data / "valid.de")
    state = tmp_path / "state.jsonl"
    first = run_grid([converted["ende-sep"]], src, ref, parse_grid("beam=2 lenpen=0.6:1.0"), {}, state)
    text = state.read_text()
    state.write_text(text[: len(text) - 20])                    # the last record torn by an interrupt
    with pytest.warns(UserWarning, match="unfinished record"):
        again = run_grid([converted["ende-sep"]], src, ref, parse_grid("beam=2 lenpen=0.6:1.0"), {}, state)
    assert again == first
    assert [json.loads(line)["setting"] for line in state.read_text().split("\n")[:-1] if line.endswith("}")] \
        == [r["setting"] for r in first]


def test_nonsense_options_are_refused_by_name(converted, data):
    with pytest.raises(GridError, match="lenpen must be finite"):
        parse_grid("lenpen=nan:1.0")
    for flag in (["--lenpen", "nan"], ["--unkpen", "nan"], ["--unkpen=-inf"], ["--max-len-b", "-1"]):
        assert main(["bleu", "--model", str(converted["ende-sep"]), "--input", str(data / "valid.en"),
                     "--reference", str(data / "valid.de"), *flag]) == 1, flag


def test_a_setting_the_model_cannot_take_is_one_line(converted, data, tmp_path, capsys):
    rc = main(["search", "--model", str(converted["ende-sep"]), "--input", str(data / "valid.en"),
               "--reference", str(data / "valid.de"), "--search", "min_len=1000", "--out", str(tmp_path / "s")])
    assert rc == 1 and "min_len 1000 is larger than max_len" in capsys.readouterr().err


def test_commands_take_only_options_they_apply(converted, data, tmp_path, capsys):
    """--nbest means nothing to scoring commands (refused as unknown); --kernels/--dtype/--quantize
    are applied by search and recorded in results.json."""
    with pytest.raises(SystemExit) as e:
        main(["bleu", "--model", str(converted["ende-sep"]), "--input", str(data / "valid.en"),
              "--reference", str(data / "valid.de"), "--nbest", "2"])
    assert e.value.code == 2 and "--nbest" in capsys.readouterr().err
    out = tmp_path / "s"
    assert main(["search", "--model", str(converted["ende-sep"]), "--input", str(data / "valid.en"),
                 "--reference", str(data / "valid.de"), "--search", "beam=2", "--kernels", "exact",
                 "--out", str(out)]) == 0
    report = json.loads((out / "results.json").read_text())
    assert report["runtime"] == {"dtype": "float32", "kernels": "exact", "quantize": "none"}


def test_overwrites_need_force(converted, data, tmp_path, capsys):
    common = ["--model", str(converted["ende-sep"]), "--input", str(data / "valid.en"), "--reference",
              str(data / "valid.de")]
    assert main(["search", *common, "--search", "beam=2", "--write-best", "--restart", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "--restart deletes" in err and "--write-best replaces" in err
    (tmp_path / "hyps.txt").write_text("mine\n")
    assert main(["bleu", *common, "--output", str(tmp_path / "hyps.txt")]) == 1
    assert (tmp_path / "hyps.txt").read_text() == "mine\n"


def test_grid_keys_as_users_type_them():
    """The flags' spelling and transformers' names (run_eval_search's grids) mean the same keys."""
    assert parse_grid("num_beams=2:3 length_penalty=0.6 max-len-b=50") == parse_grid(
        "beam=2:3 lenpen=0.6 max_len_b=50")
    with pytest.raises(GridError, match="also spelled"):
        parse_grid("temperature=1")


def test_ensembles_are_written_as_fairseq_writes_them():
    from parity.record import fairseq_spec

    assert fairseq_spec("dir:model1.pt:model2.pt") == ("dir", ["model1.pt", "model2.pt"])
    assert fairseq_spec("dir:model1.pt,model2.pt") == ("dir", ["model1.pt", "model2.pt"])
    assert fairseq_spec("dir") == ("dir", ["model.pt"])
