"""The parity harness: the port against the original's run, layer by layer, token by token,
hypothesis by hypothesis, BLEU against BLEU.

The original's side is always a run directory in the recorder's format (parity/record.py): a
recorded reference run, or one recorded just now from live fairseq. So a live comparison and a
replay are the same code, and every live comparison can be kept as a new reference run.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import load_file

from parity import machine, names
from parity.compare import TensorDiff, diff, first_differing_step, first_divergence
from porting.evaluation.scoring import paired_bootstrap, score
from porting.generation.beam import generate, left_pad
from porting.generation.options import GenerationOptions
from porting.model.load import load_ensemble
from porting.tokenizer import Tokenizer


def _load(run: Path, name: str):
    return json.loads((run / name).read_text(encoding="utf-8"))


def tensors(port_dir: Path, run: Path, atol: float, rtol: float, mode: str = "accumulate") -> dict:
    """Teacher-forced tensors at every layer boundary; the worst sentence per tensor, in forward order.

    mode "accumulate": the port runs on its own from the tokens, so a tensor's error includes all
    the error it inherited. mode "shadow": every boundary is replaced by the original's tensor before
    the port goes on, so each tensor's error is the error of the one segment that produced it (a
    broken layer fails alone; the layers after it pass).
    """
    if not (run / "teacher_forced.safetensors").exists():
        return {"skipped": "this run has no teacher-forced tensors (an ensemble run)"}
    model = load_ensemble(port_dir)[1][0]
    a = model.arch
    declared = names.boundaries(a.encoder_layers, a.decoder_layers, a.encoder_normalize_before, a.decoder_final_norm)
    rec = load_file(str(run / "teacher_forced.safetensors"))
    meta = _load(run, "teacher_forced.json")
    recorded_order = meta["forward_order"][3:]     # after src_tokens, target, prev_output_tokens
    worst: dict[str, TensorDiff] = {}
    for i in meta["sentences"]:
        seen = {}

        def hook(name, x, i=i):
            seen[name] = x[:, 0]                                           # [T, B=1, C] -> [T, C]
            key = f"s{i}/{name}"
            if mode == "shadow" and key in rec and rec[key].shape == x[:, 0].shape:
                return rec[key].to(x.dtype)[:, None]                       # [T, C] -> [T, 1, C]
            return None
        with torch.no_grad():
            logits = model(rec[f"s{i}/src_tokens"][None], rec[f"s{i}/prev_output_tokens"][None], hooks=hook)
        seen["decoder.logits"] = logits[0]
        seen["decoder.lprobs"] = model.log_probs(logits)[0]
        for name in recorded_order:
            d = diff(name, seen.get(name, torch.empty(0)), rec[f"s{i}/{name}"], atol, rtol)
            if name not in worst or d.max_abs > worst[name].max_abs:
                worst[name] = d
    ordered = [worst[n] for n in recorded_order]
    first = first_divergence(ordered)
    problems = []
    if [b.name for b in declared] != recorded_order:
        problems.append(f"the port's boundaries {[b.name for b in declared]} are not the recorded ones {recorded_order}")
    # Replaying on the recording's machine and thread count, a faithful port is usually bitwise equal;
    # then the first tensor that differs at all points at a bug too small for the tolerance
    # (a changed layer-norm epsilon: ~1e-5 relative per layer) before it grows past it.
    inexact = next((d.name for d in ordered if d.max_abs > 0), None)
    return {"mode": mode, "tensors": [d.to_dict() for d in ordered], "first_divergence": first.name if first else None,
            "first_inexact": inexact,
            "failing": [d.name for d in ordered if not d.ok], "atol": atol, "rtol": rtol,
            "correspondence": [asdict(b) for b in declared], "problems": problems,
            "ok": first is None and not problems}


def tokenization(port_dir: Path, run: Path) -> dict:
    tok, inputs = Tokenizer(port_dir), _load(run, "inputs.json")
    stages = {"moses": [], "bpe": [], "ids": []}
    for n, line in enumerate(inputs["source"]):
        ours = {"moses": tok.moses_tokens(line).split(), "bpe": tok.encode_pieces(line).split(), "ids": tok.encode(line)}
        for stage in stages:
            if ours[stage] != inputs[stage][n]:
                stages[stage].append({"line": n, "source": line, "port": ours[stage], "original": inputs[stage][n]})
    return {"lines": len(inputs["source"]), "mismatches": {k: v[:20] for k, v in stages.items()},
            "counts": {k: len(v) for k, v in stages.items()}, "ok": not any(stages.values())}


def _step_log_probs(ensemble, src: list[int], prefix: list[int], tokens: tuple[int, int]) -> list[float]:
    """The port's log-probs of two competing tokens after a common prefix (one sentence, no beam)."""
    src_t = torch.tensor([src])
    encs = ensemble.for_beam(ensemble.encode(src_t), 1)
    caches = ensemble.new_caches()
    prev = torch.tensor([[2] + prefix])
    lp = None
    for t in range(prev.size(1)):
        lp = ensemble.step(prev[:, : t + 1], encs, caches)
    return [float(lp[0, tok]) for tok in tokens]


def generation(port_dir: Path, run: Path, settings: list[str] | None, ngram_blocking: str = "fairseq",
               kernels: str = "fast", progress=None) -> dict:
    """Per setting: share of identical hypotheses; for each mismatch, where and how they part.
    ``progress(n)`` is called as each batch of n lines is decoded."""
    from porting.generation.ensemble import Ensemble

    ensemble = Ensemble(load_ensemble(port_dir)[1], kernels)
    tok = Tokenizer(port_dir)
    inputs = _load(run, "inputs.json")
    ids, sources = inputs["ids"], inputs["source"]
    out = {}
    available = sorted(p.stem for p in (run / "generation").glob("*.json"))
    for setting in settings or available:
        if setting not in available:
            out[setting] = {"error": f"not in this run (it has: {', '.join(available)})"}
            continue
        rec = _load(run, f"generation/{setting}.json")
        opts = GenerationOptions(**rec["options"], ngram_blocking=ngram_blocking)
        ours: dict[int, list] = {}
        for batch in rec["batches"]:
            for i, hyps in zip(batch, generate(ensemble, left_pad([ids[i] for i in batch]), opts)):
                ours[i] = hyps
            if progress is not None:
                progress(len(batch))
        mismatches, worst = [], 0.0
        for i, theirs in enumerate(rec["hypotheses"]):
            a, b = ours[i][0], theirs[0]
            if a.tokens != b["tokens"]:
                step = first_differing_step(a.tokens, b["tokens"])
                prefix = b["tokens"][:step]
                competing = (a.tokens[step] if step < len(a.tokens) else 2, b["tokens"][step] if step < len(b["tokens"]) else 2)
                lps = _step_log_probs(ensemble, ids[i], prefix, competing)
                mismatches.append({
                    "line": i, "source": sources[i], "port": tok.decode(a.tokens), "original": b["text"],
                    "port_tokens": a.tokens, "original_tokens": b["tokens"],
                    "port_score": a.score, "original_score": b["score"], "first_differing_step": step,
                    "at_that_step": {"port_token": tok.symbols([competing[0]]) or "</s>", "port_token_logprob": lps[0],
                                     "original_token": tok.symbols([competing[1]]) or "</s>", "original_token_logprob": lps[1]}})
            else:
                worst = max(worst, abs(a.score - b["score"]))
        n = len(rec["hypotheses"])
        out[setting] = {"options": rec["options"], "identical": n - len(mismatches), "lines": n,
                        "share_identical": (n - len(mismatches)) / n, "max_score_diff": worst,
                        "mismatches": mismatches[:50], "ok": not mismatches}
        out[setting]["port_texts"] = [tok.decode(ours[i][0].tokens) for i in range(n)]
    return out


def bleu(gen: dict, run: Path, setting: str) -> dict | None:
    if setting not in gen or "port_texts" not in gen[setting]:
        return None
    rec = _load(run, f"generation/{setting}.json")
    refs = _load(run, "inputs.json")["reference"]
    if refs is None:
        return None   # a run recorded without references
    original = [h[0]["text"] for h in rec["hypotheses"]]
    port = gen[setting]["port_texts"]
    s_port, s_orig = score(port, refs), score(original, refs)
    return {"setting": setting, "port": s_port.to_dict(), "original": s_orig.to_dict(),
            "paired_bootstrap": paired_bootstrap(original, port, refs)}


def generation_work(run: Path, settings: list[str] | None) -> int:
    """How many lines the generation comparison decodes (settings x lines): a progress display's total."""
    available = {p.stem for p in (run / "generation").glob("*.json")}
    lines = len(_load(run, "inputs.json")["source"])
    return lines * len([s for s in (settings or available) if s in available])


def compare(port_dir: Path, run: Path, settings: list[str] | None, atol: float, rtol: float, mode: str,
            kernels: str, progress=None) -> dict:
    """The whole comparison of the port against one run: tensors, tokenization, generation, BLEU,
    and whether it passes. ``progress(n)``: as generation decodes n more lines."""
    path = run.parent / "manifest.json"
    manifest = json.loads(path.read_text()) if path.exists() else {}
    if "threads" in manifest:  # reproduce the recording's float reductions: same thread count
        torch.set_num_threads(manifest["threads"])
    report = {"conditions": machine.conditions(manifest),
              "tensors": tensors(port_dir, run, atol, rtol, mode),
              "tokenization": tokenization(port_dir, run),
              "generation": generation(port_dir, run, settings, kernels=kernels, progress=progress)}
    main_setting = next((s for s in ("beam5_nbest5", "greedy") if s in report["generation"]), None)
    report["bleu"] = bleu(report["generation"], run, main_setting) if main_setting else None
    for g in report["generation"].values():
        g.pop("port_texts", None)
    report["ok"] = (report["tensors"].get("ok", True) and report["tokenization"]["ok"]
                    and all(g.get("ok", False) for g in report["generation"].values()))
    return report
