"""`porting parity` passes on a faithful port and names the first divergence of a broken one."""
from __future__ import annotations

import json
import shutil

import pytest
from safetensors.torch import load_file, save_file

from parity import shipped
from porting.cli import main

RUN = shipped.RUNS / "ende-sep"


def parity(port, report, *extra):
    return main(["parity", "--original", f"recorded:{RUN}", "--port", str(port), "--report", str(report),
                 "--settings", "greedy", *extra])


def first_divergence(report):
    return json.loads((report / "report.json").read_text())["tensors"]["first_divergence"]


def test_faithful_port_passes(converted, tmp_path):
    assert parity(converted["ende-sep"], tmp_path / "r") == 0
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["ok"] and report["generation"]["greedy"]["identical"] == 500
    assert report["bleu"]["port"]["bleu"] == report["bleu"]["original"]["bleu"]
    md = (tmp_path / "r" / "report.md").read_text()
    assert "**PASS**" in md and "| decoder.lprobs |" in md
    page = (tmp_path / "r" / "report.html").read_text()
    assert "<h1 class='good'>Parity PASS</h1>" in page and "data:image/png;base64,iVBOR" in page
    assert "<script" not in page and "http" not in page.replace("<!doctype html>", "")  # self-contained


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
    assert first_divergence(tmp_path / "r") == "decoder.layers.1"
    page = (tmp_path / "r" / "report.html").read_text()
    assert "Parity FAIL" in page and "<b id='first-divergence'>decoder.layers.1</b>" in page


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
    import porting.model as model

    real = model.positions_for
    monkeypatch.setattr(model, "positions_for", lambda tokens, pad, offset=0: real(tokens, pad, offset + 1))
    assert parity(converted["ende-sep"], tmp_path / "r") == 1
    assert first_divergence(tmp_path / "r") == "encoder.embed"


def test_decoder_started_from_bos(converted, tmp_path, monkeypatch):
    """Tensors are fine (teacher forcing feeds fairseq's </s>), generation is not."""
    import porting.generate as gen

    real_search = gen._search

    def search_from_bos(ensemble, encs, opts, bsz, beam, max_len):
        orig_step = ensemble.step

        def step(tokens, encs_, caches):
            tokens = tokens.clone()
            tokens[:, 0] = 0  # <s> instead of </s>
            return orig_step(tokens, encs_, caches)
        ensemble.step = step
        try:
            return real_search(ensemble, encs, opts, bsz, beam, max_len)
        finally:
            ensemble.step = orig_step
    monkeypatch.setattr(gen, "_search", search_from_bos)
    assert parity(converted["ende-sep"], tmp_path / "r") == 1
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["tensors"]["ok"] and not report["generation"]["greedy"]["ok"]
    assert report["generation"]["greedy"]["identical"] < 500


@pytest.mark.skipif(not __import__("tests.conftest", fromlist=["HAVE_FAIRSEQ"]).HAVE_FAIRSEQ, reason="needs fairseq")
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
