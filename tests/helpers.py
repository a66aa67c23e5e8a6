"""Small helpers shared by tests."""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from parity import shipped


def trusted_load(path: Path) -> dict:
    """Tests read checkpoints fairseq wrote here, in this repository: trusted, so a full unpickle."""
    return torch.load(path, map_location="cpu", weights_only=False)


def model_dir(name: str) -> Path:
    return shipped.catalog()[name].path


def convert_cli(*args: str) -> int:
    from porting_cli import main

    return main(["convert", "fairseq", *map(str, args)])


def namespace(**kw) -> argparse.Namespace:
    return argparse.Namespace(**kw)


def same_up_to_ties(ours, theirs, tol: float, other_within: float = 0.0) -> bool:
    """The fast kernels' n-best list against fairseq's (dicts with "tokens" and "score"): the same
    hypotheses, the best one first on both sides, and any other order difference only between
    hypotheses whose scores are within `tol` (a last-bit difference can order two hypotheses that
    fairseq scores exactly equal the other way). other_within: a lower place may also hold another
    hypothesis, of a score within this of the one recorded there (the beam kept the other of two
    equals: porting/NOTES.md); 0: never."""
    if ours[0].tokens != theirs[0]["tokens"] or len(ours) != len(theirs):
        return False
    toks, recorded = [h.tokens for h in ours], [t["tokens"] for t in theirs]
    if any((h.tokens not in recorded or t["tokens"] not in toks) and not abs(h.score - t["score"]) < other_within
           for h, t in zip(ours, theirs)):
        return False
    return all(abs(h.score - t["score"]) < tol for h, t in zip(ours, theirs))


def interruptible() -> None:
    """A child's SIGINT back to its default (Popen's preexec_fn), for tests that interrupt it: run
    from a background job of a non-interactive shell (`make test &`), the suite and so its children
    inherit SIGINT ignored, and Python rightly keeps ignoring it."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def teacher_forced_run(run_name: str) -> str:
    """The run itself where it recorded teacher-forced tensors, else its model's run that did (the
    ensemble's: ende-sep's, whose member it shares)."""
    import json

    runs = json.loads((shipped.RUNS / "manifest.json").read_text())["runs"]
    if runs[run_name]["teacher_forced"]:
        return run_name
    return next(r for r, spec in runs.items() if spec["model"] == runs[run_name]["model"] and spec["teacher_forced"]
                and spec["checkpoints"][0] in runs[run_name]["checkpoints"])


def rounds_as_recorded(model: Path, run_name: str) -> bool:
    """Whether this machine reproduces a recorded run's floats; `model`: the run's conversion, the run
    one with teacher-forced tensors (``teacher_forced_run``). The recorded instruction set is forced
    (tests/conftest.py), but math libraries also round by CPU model, and which of their operations a
    model meets depends on its architecture: on an AMD EPYC (2026-12-06) the ende-sep, ende-joined and
    m2m runs replay bitwise and the bart-man and mbart-enro ones (GELU, the embedding's layer norm),
    recorded elsewhere, do not. The probe: the port's exact kernels (fairseq's arithmetic) on the run's
    first teacher-forced sentence, at the recording's thread count, its embeddings and first encoder
    layer bitwise as recorded."""
    import json

    from safetensors.torch import load_file

    from porting.model.load import load_ensemble

    manifest = json.loads((shipped.RUNS / "manifest.json").read_text())
    member = load_ensemble(model)[1][0]
    recorded = load_file(str(shipped.RUNS / run_name / "teacher_forced.safetensors"))
    seen = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(manifest["threads"])          # as recorded: a layer's sums depend on the split
    try:
        with torch.no_grad():
            member(recorded["s0/src_tokens"][None], recorded["s0/prev_output_tokens"][None],
                   hooks=lambda name, x: seen.__setitem__(name, x[:, 0].clone()))
    finally:
        torch.set_num_threads(threads)
    return all(torch.equal(seen[name], recorded[f"s0/{name}"]) for name in ("encoder.embed", "encoder.layers.0"))


def replay_exact(model: Path, run_name: str, start) -> None:
    """Every hypothesis of every recorded setting of a run, its score and its positional scores, decoded
    by the exact kernels from the recorded ids, equal to fairseq's bit for bit; skipped where this CPU
    rounds otherwise than the recording's (``rounds_as_recorded``)."""
    import json

    import pytest

    from porting.generation.beam import generate, left_pad
    from porting.generation.ensemble import Ensemble
    from porting.generation.options import GenerationOptions
    from porting.model.load import load_ensemble

    run = shipped.RUNS / run_name
    manifest = json.loads((shipped.RUNS / "manifest.json").read_text())
    torch.set_num_threads(manifest["threads"])
    if not rounds_as_recorded(model, run_name):
        pytest.skip("this CPU rounds otherwise than the recording's (rounds_as_recorded)")
    member = load_ensemble(model)[1][0]
    ensemble, ids = Ensemble([member], kernels="exact"), json.loads((run / "inputs.json").read_text())["ids"]
    for setting in manifest["runs"][run_name]["settings"]:
        rec = json.loads((run / "generation" / f"{setting}.json").read_text())
        # fairseq-fixed's inert n-gram blocker and its batch-wide length cap, bug for bug (NOTES.md)
        opts = GenerationOptions(**rec["options"], ngram_blocking="fairseq", max_len_from="batch-width")
        for batch in rec["batches"]:
            for i, hyps in zip(batch, generate(ensemble, left_pad([ids[i] for i in batch]), opts, None, start)):
                ours = [(h.tokens, h.score, list(h.positional_scores)) for h in hyps]
                theirs = [(t["tokens"], t["score"], t["positional_scores"]) for t in rec["hypotheses"][i]]
                assert ours == theirs, (setting, i)


def perturbed_ensemble_parity(name: str, source_lang: str, target_lang: str, tmp_path: Path, lines: int = 30) -> dict:
    """A two-member ensemble made from a shipped release (model.pt and a copy with every weight scaled by
    1.01: another model, the same architecture and dictionary), run live through fairseq (its
    ``a.pt:b.pt`` ensemble) and through the port's conversion of both: the parity report of greedy and
    beam 5 on the first `lines` test lines."""
    import json
    import shutil

    release = tmp_path / "release"
    shutil.copytree(model_dir(name), release)
    state = trusted_load(release / "model.pt")
    state["model"] = {k: v * 1.01 if v.is_floating_point() else v for k, v in state["model"].items()}
    torch.save(state, release / "model2.pt")
    source = shipped.test_set(source_lang, target_lang)[0][:lines]
    (tmp_path / "input.txt").write_text("".join(x + "\n" for x in source), encoding="utf-8")
    assert convert_cli("--checkpoint", release / "model.pt", "--checkpoint", release / "model2.pt",
                       "--data-dir", release, "--out", tmp_path / "port") == 0
    from porting_cli import main

    rc = main(["parity", "--original", f"fairseq:{release}:model.pt:model2.pt", "--port", str(tmp_path / "port"),
               "--input", str(tmp_path / "input.txt"), "--settings", "greedy,beam5_nbest5",
               "--report", str(tmp_path / "report")])
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert rc == (0 if report["ok"] else 1)
    return report
