"""`porting parity` passes on a faithful port and names the first divergence of a broken one."""
from __future__ import annotations

import json
import shutil

import pytest
from safetensors.torch import load_file, save_file

from parity import shipped
from porting_cli import main
from tests.conftest import requires_fairseq

RUN = shipped.RUNS / "ende-sep"


def parity(port, report, *extra):
    return main(["parity", "--original", f"recorded:{RUN}", "--port", str(port), "--report", str(report),
                 "--settings", "greedy", *extra])


def first_divergence(report):
    return json.loads((report / "report.json").read_text())["tensors"]["first_divergence"]


def tensors_report(report):
    return json.loads((report / "report.json").read_text())["tensors"]


def test_faithful_port_passes(converted, tmp_path):
    assert parity(converted["ende-sep"], tmp_path / "r") == 0
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["ok"] and report["generation"]["greedy"]["identical"] == 500
    assert report["scores"]["port"]["bleu"] == report["scores"]["original"]["bleu"]
    md = (tmp_path / "r" / "report.md").read_text()
    assert "**PASS**" in md and "| decoder.lprobs |" in md
    page = (tmp_path / "r" / "report.html").read_text()
    assert "<h1 class='good'>Parity PASS</h1>" in page and "data:image/png;base64,iVBOR" in page
    assert "<script" not in page and "http" not in page.replace("<!doctype html>", "")  # self-contained
    # tokenization as a table, not a Python dict; the conditions' note in the page as in report.md
    assert "| stage | lines that differ |\n|---|---|\n| moses | 0 |" in md and "{'moses'" not in md + page
    assert "<table id='tokenization'>" in page
    from parity.report import render

    noted = {**report, "conditions": {**report["conditions"], "note": "recorded on AVX2, replayed on AVX512"}}
    assert "<p class='bad' id='conditions'>note: recorded on AVX2, replayed on AVX512</p>" in render(noted)


@pytest.fixture
def broken(converted, tmp_path):
    """A copy of the converted model to damage."""
    out = tmp_path / "broken"
    shutil.copytree(converted["ende-sep"], out)
    return out


def test_k_and_v_swapped(broken, tmp_path):
    t = load_file(str(broken / "model.safetensors"))
    p = "model.decoder.layers.1.self_attn."
    for kind in ("weight", "bias"):
        t[p + f"k_proj.{kind}"], t[p + f"v_proj.{kind}"] = t[p + f"v_proj.{kind}"], t[p + f"k_proj.{kind}"]
    save_file(t, str(broken / "model.safetensors"), metadata={"format": "pt"})
    assert parity(broken, tmp_path / "r") == 1
    t = tensors_report(tmp_path / "r")
    assert t["first_divergence"] == "decoder.layers.1"
    # accumulate mode: the error is inherited by everything after the broken layer
    assert t["failing"] == ["decoder.layers.1", "decoder.layers.2", "decoder.logits", "decoder.lprobs"]
    page = (tmp_path / "r" / "report.html").read_text()
    assert "Parity FAIL" in page and "<b id='first-divergence'>decoder.layers.1</b>" in page
    # shadow mode: each layer gets the original's input, so the broken layer fails alone
    assert parity(broken, tmp_path / "s", "--mode", "shadow") == 1
    assert tensors_report(tmp_path / "s")["failing"] == ["decoder.layers.1"]


def test_report_not_overwritten_without_force(converted, tmp_path, capsys):
    assert parity(converted["ende-sep"], tmp_path / "r") == 0
    before = (tmp_path / "r" / "report.json").read_bytes()
    assert parity(converted["ende-sep"], tmp_path / "r") == 2
    assert "--force" in capsys.readouterr().err
    assert (tmp_path / "r" / "report.json").read_bytes() == before
    assert parity(converted["ende-sep"], tmp_path / "r", "--force") == 0


def test_correspondence_table_in_report(converted, replays_bitwise, tmp_path):
    parity(converted["ende-sep"], tmp_path / "r", "--mode", "shadow")
    t = tensors_report(tmp_path / "r")
    # shadow of a faithful port: bitwise, where this machine rounds as the recording's did
    assert t["mode"] == "shadow" and t["ok"] and (t["first_inexact"] is None or not replays_bitwise("ende-sep"))
    rows = {b["name"]: (b["fairseq_module"], b["taken_from"]) for b in t["correspondence"]}
    assert rows["encoder.embed"] == ("encoder.layers.0", "input")
    assert rows["decoder.layers.2"] == ("decoder.layers.2", "output")
    assert "| encoder.embed | `encoder.layers.0` | input |" in (tmp_path / "r" / "report.md").read_text()


def test_layer_norm_epsilon_changed(converted, replays_bitwise, tmp_path, monkeypatch):
    """eps 1e-12 (BERT-style) for fairseq's 1e-5 changes each layer by ~1e-5 relative: inside the
    default rtol, so under default tolerances the error only shows once it has grown (later); the
    report's first inexact tensor already names the layer, and shadow mode with rtol 0 makes it the
    first divergence."""
    import porting.model.transformer as model

    monkeypatch.setattr(model, "LAYER_NORM_EPS", 1e-12)
    assert parity(converted["ende-sep"], tmp_path / "r") == 1
    t = tensors_report(tmp_path / "r")
    # (elsewhere the recording's own sinusoidal table is already a last bit off: encoder.embed)
    assert t["first_inexact"] == ("encoder.layers.0" if replays_bitwise("ende-sep") else "encoder.embed")
    assert t["first_divergence"] != "encoder.layers.0"
    assert parity(converted["ende-sep"], tmp_path / "s", "--mode", "shadow", "--rtol", "0", "--atol", "1e-6") == 1
    assert tensors_report(tmp_path / "s")["first_divergence"] == "encoder.layers.0"


def test_embedding_scale_missing(broken, tmp_path):
    cfg = json.loads((broken / "config.json").read_text())
    cfg["porting"]["architecture"]["no_scale_embedding"] = True
    (broken / "config.json").write_text(json.dumps(cfg))
    assert parity(broken, tmp_path / "r") == 1
    assert first_divergence(tmp_path / "r") == "encoder.embed"
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["generation"]["greedy"]["identical"] < 500
    m = report["generation"]["greedy"]["mismatches"][0]
    assert m["first_differing_step"] >= 0 and "original_token_logprob" in m["at_that_step"]


def test_positions_offset_by_one(converted, tmp_path, monkeypatch):
    import porting.model.transformer as model

    real = model.positions_for
    # every real token one position further on (padding keeps padding_idx)
    monkeypatch.setattr(model, "positions_for", lambda tokens, pad: real(tokens, pad) + tokens.ne(pad).int())
    assert parity(converted["ende-sep"], tmp_path / "r") == 1
    assert first_divergence(tmp_path / "r") == "encoder.embed"


@pytest.mark.parametrize("loop", ["c", "python"])
def test_decoder_started_from_bos(converted, tmp_path, monkeypatch, loop):
    """Tensors are fine (teacher forcing feeds fairseq's </s>), generation is not. The fault is put
    into the search's loop that runs: the C one (porting/kernels/skinny_search.c), which runs this
    model's greedy search, or beam.py's, where the C one is turned off."""
    import porting.generation.beam as gen

    real_search, real_native = gen._search, gen._search_natively

    def search_from_bos(ensemble, encs, opts, state):
        # both ways the search steps the decoder (the fused candidates step and the plain one)
        # see <s> instead of </s> as the first token
        originals = {name: getattr(ensemble, name) for name in ("step", "step_candidates")}

        def from_bos(original):
            def wrapped(tokens, *args, **kwargs):
                tokens = tokens.clone()
                tokens[:, 0] = 0  # <s> instead of </s>
                return original(tokens, *args, **kwargs)
            return wrapped
        for name, original in originals.items():
            setattr(ensemble, name, from_bos(original))
        try:
            return real_search(ensemble, encs, opts, state)
        finally:
            for name, original in originals.items():
                setattr(ensemble, name, original)

    ran_natively = []

    def native_from_bos(ensemble, encs, opts, state, start):
        ran = loop == "c" and real_native(ensemble, encs, opts, state, start._replace(bos=0))   # <s> first in C
        ran_natively.append(ran)
        return ran
    monkeypatch.setattr(gen, "_search", search_from_bos)
    monkeypatch.setattr(gen, "_search_natively", native_from_bos)
    assert parity(converted["ende-sep"], tmp_path / "r") == 1
    assert ran_natively and all(ran_natively) == (loop == "c")      # the fault reached the loop that ran
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["tensors"]["ok"] and not report["generation"]["greedy"]["ok"]
    assert report["generation"]["greedy"]["identical"] < 500


def test_early_stopping_semantics_swapped(converted, tmp_path, monkeypatch):
    """transformers' early_stopping=False where fairseq's rule is meant: teacher-forced tensors and
    greedy are untouched; beam search parts, and the report points at the step where it does."""
    from parity.native import NativeSystem

    real = NativeSystem.translate
    monkeypatch.setattr(NativeSystem, "translate",
                        lambda self, batch, options, cap=None: real(self, batch, {**options, "early_stopping": "false"}, cap))
    assert parity(converted["ende-sep"], tmp_path / "r", "--settings", "greedy,beam5_nbest5") == 1
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["tensors"]["ok"] and report["generation"]["greedy"]["ok"]
    beam = report["generation"]["beam5_nbest5"]
    assert 0 < beam["identical"] < 500
    for m in beam["mismatches"]:
        step, ours, theirs = m["first_differing_step"], m["port_tokens"], m["original_tokens"]
        assert ours[:step] == theirs[:step]
        assert step == min(len(ours), len(theirs)) or ours[step] != theirs[step]
    # the numbers agree and the native port claims fairseq's rules: the harness cannot explain these
    assert beam["causes"]["unexplained"] > 0 and beam["causes"]["numerics"] == 0


@requires_fairseq
def test_prenorm_treated_as_postnorm(tmp_path, monkeypatch):
    """Live fairseq on a pre-norm checkpoint; the port's sublayers ignore normalize_before."""
    import porting.model.transformer as model
    from tests.fairseq_models import build
    from tests.helpers import convert_cli

    src = build("prenorm")
    assert convert_cli("--checkpoint", src / "model.pt", "--data-dir", src, "--out", tmp_path / "out") == 0
    lines, refs = shipped.test_set()
    (tmp_path / "in.en").write_text("\n".join(lines[:10]) + "\n", encoding="utf-8")
    (tmp_path / "in.de").write_text("\n".join(refs[:10]) + "\n", encoding="utf-8")
    args = ["parity", "--original", f"fairseq:{src}", "--port", str(tmp_path / "out"), "--input",
            str(tmp_path / "in.en"), "--settings", "greedy"]
    # the faithful port passes; without references, tensors are teacher-forced on fairseq's own output
    assert main([*args, "--report", str(tmp_path / "ok")]) == 0
    ok = json.loads((tmp_path / "ok" / "report.json").read_text())
    assert ok["scores"] is None and ok["tensors"]["ok"] and ok["tensors"]["first_inexact"] is None
    args += ["--reference", str(tmp_path / "in.de")]
    real = model.residual_block
    monkeypatch.setattr(model, "residual_block", lambda x, norm, fn, pre_norm: real(x, norm, fn, False))
    assert main([*args, "--report", str(tmp_path / "r")]) == 1
    t = tensors_report(tmp_path / "r")
    assert t["first_divergence"] == "encoder.layers.0"
    assert [b["name"] for b in t["correspondence"]][-4:] == ["decoder.layers.1", "decoder.layer_norm",
                                                              "decoder.logits", "decoder.lprobs"]


@requires_fairseq
def test_live_fairseq_and_record(converted, tmp_path):
    src, ref = shipped.test_set()
    (tmp_path / "in.en").write_text("\n".join(src[:20]) + "\n", encoding="utf-8")
    (tmp_path / "in.de").write_text("\n".join(ref[:20]) + "\n", encoding="utf-8")
    m = shipped.catalog()["ende-sep"]
    rc = main(["parity", "--original", f"fairseq:{m.path}:model2.pt", "--port", str(converted["ende-sep"]),
               "--input", str(tmp_path / "in.en"), "--reference", str(tmp_path / "in.de"),
               "--settings", "greedy,beam5_nbest5", "--report", str(tmp_path / "r"), "--record"])
    assert rc == 0
    assert (tmp_path / "r" / "original-run" / "inputs.json").exists()
    # the kept run replays without fairseq
    assert main(["parity", "--original", f"recorded:{tmp_path / 'r' / 'original-run'}", "--port",
                 str(converted["ende-sep"]), "--report", str(tmp_path / "r2")]) == 0


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
BAR_RED = (0xC6, 0x28, 0x28)   # the plot's colour for tensors beyond tolerance (parity/report.py)


def screenshot(page, png):
    """The page as a real browser draws it: headless chromium, from disk, no server."""
    import subprocess

    import matplotlib.image

    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--hide-scrollbars", "--disable-background-networking", "--window-size=1200,1600",
                    f"--screenshot={png}", page.as_uri()], check=True, capture_output=True, timeout=120)
    return (matplotlib.image.imread(str(png))[..., :3] * 255).round().astype(int)   # [H, W, 3]


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs Debian's)")
def test_html_page_in_headless_chromium(broken, tmp_path):
    t = load_file(str(broken / "model.safetensors"))
    t["model.decoder.layers.1.fc1.weight"] *= 2
    save_file(t, str(broken / "model.safetensors"), metadata={"format": "pt"})
    assert parity(broken, tmp_path / "r") == 1
    page = tmp_path / "r" / "report.html"
    red = (screenshot(page, tmp_path / "page.png") == BAR_RED).all(-1).sum()
    # control: the same page with its embedded plot broken; only the red table text is left
    broken_img = page.read_text().replace("data:image/png;base64,", "data:image/png;base64,AAAA")
    (tmp_path / "r" / "no-plot.html").write_text(broken_img)
    red_without = (screenshot(tmp_path / "r" / "no-plot.html", tmp_path / "no-plot.png") == BAR_RED).all(-1).sum()
    # the four failing tensors' bars are ~40 x 150 px each; the red text of their table rows ~2,500 px
    assert red > 10_000 > red_without, (red, red_without)


def test_unknown_setting_is_a_usage_error(converted, tmp_path, capsys):
    rc = main(["parity", "--original", f"recorded:{shipped.RUNS / 'ende-sep'}", "--port", str(converted["ende-sep"]),
               "--settings", "beam5", "--report", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert rc == 2 and "unknown beam5" in err and "beam5_nbest5" in err and not (tmp_path / "r").exists()


def test_port_that_is_no_model_is_a_usage_error(tmp_path, capsys):
    rc = main(["parity", "--original", f"recorded:{shipped.RUNS / 'ende-sep'}", "--port", str(tmp_path / "nothing"),
               "--report", str(tmp_path / "r")])
    assert rc == 2 and "--port" in capsys.readouterr().err and not (tmp_path / "r").exists()
