"""The parity harness: a system under test against the original's run, layer by layer, token by
token, hypothesis by hypothesis, BLEU against BLEU.

The original's side is always a run directory in the recorder's format (parity/record.py): a
recorded reference run, or one recorded just now from live fairseq. So a live comparison and a
replay are the same code, and every live comparison can be kept as a new reference run. The side
under test is a system (parity/systems.py): our port, a transformers model or a CTranslate2 model.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors import safe_open

from parity import approximation, causes, machine
from parity.compare import TensorDiff, diff, first_differing_step, first_divergence
from parity.contract import fairseq_cap
from porting.evaluation.scoring import SIGNIFICANCE, TUNING, TunedMetric
from porting.format import EOS


def _load(run: Path, name: str):
    return json.loads((run / name).read_text(encoding="utf-8"))


def tensors(system, run: Path, atol: float, rtol: float, mode: str = "accumulate", budget=None) -> dict:
    """Teacher-forced tensors at every layer boundary; the worst sentence per tensor, in forward order.

    mode "accumulate": the system runs on its own from the tokens, so a tensor's error includes all
    the error it inherited. mode "shadow" (the native port only): every boundary is replaced by the
    original's tensor before the port goes on, so each tensor's error is the error of the one segment
    that produced it (a broken layer fails alone; the layers after it pass).

    budget (an approximate port's, parity/approximation.py): a tensor passes by its SQNR instead of
    atol/rtol, the worst sentence is the one of least SQNR, and where the system can shadow, each
    layer's own error (shadow mode) is given beside the accumulated one ("own").
    """
    if system.boundaries is None:
        return {"skipped": f"{system.kind} exposes no tensors (its layers run in C++); compared on "
                           "log-probs and hypotheses only"}
    if not (run / "teacher_forced.safetensors").exists():
        return {"skipped": "this run has no teacher-forced tensors (an ensemble run)"}
    declared = system.boundary_table()
    meta = _load(run, "teacher_forced.json")
    recorded_order = meta["forward_order"][3:]     # after src_tokens, target, prev_output_tokens
    min_sqnr = None if budget is None else budget.min_sqnr_db
    ordered = _worst_per_tensor(system, run, meta, recorded_order, atol, rtol, mode, min_sqnr)
    first = first_divergence(ordered)
    problems = []
    if [b.name for b in declared] != recorded_order:
        problems.append(f"the system's boundaries {[b.name for b in declared]} are not the recorded ones {recorded_order}")
    # Replaying on the recording's machine and thread count, a faithful port is usually bitwise equal;
    # then the first tensor that differs at all points at a bug too small for the tolerance
    # (a changed layer-norm epsilon: ~1e-5 relative per layer) before it grows past it.
    inexact = next((d.name for d in ordered if d.max_abs > 0), None)
    out = {"mode": mode, "tensors": [d.to_dict() for d in ordered], "first_divergence": first.name if first else None,
           "first_inexact": inexact,
           "failing": [d.name for d in ordered if not d.ok], "atol": atol, "rtol": rtol,
           "correspondence": [asdict(b) for b in declared], "problems": problems,
           "ok": first is None and not problems}
    if min_sqnr is not None:
        out["min_sqnr_db"] = min_sqnr
        if mode == "accumulate" and system.shadows:
            own = _worst_per_tensor(system, run, meta, recorded_order, atol, rtol, "shadow", min_sqnr)
            out["own"] = [d.to_dict() for d in own]
    return out


def _worst_per_tensor(system, run: Path, meta: dict, order: list[str], atol: float, rtol: float, mode: str,
                      min_sqnr: float | None) -> list[TensorDiff]:
    """Each boundary's diff on its worst sentence (largest error, or least SQNR under a budget), in
    forward order. The recorded tensors are read one sentence at a time, never all at once."""
    worst: dict[str, TensorDiff] = {}

    def worse(d: TensorDiff, than: TensorDiff | None) -> bool:
        return than is None or (d.sqnr_db < than.sqnr_db if min_sqnr is not None else d.max_abs > than.max_abs)
    with safe_open(str(run / "teacher_forced.safetensors"), "pt") as rec:
        keys = set(rec.keys())
        for i in meta["sentences"]:
            replace = None
            if mode == "shadow":
                def replace(name, x, i=i):
                    key = f"s{i}/{name}"
                    if key not in keys:
                        return None
                    r = rec.get_tensor(key)
                    return r if r.shape == x.shape else None
            seen = system.boundaries(rec.get_tensor(f"s{i}/src_tokens"), rec.get_tensor(f"s{i}/prev_output_tokens"),
                                     replace)
            for name in order:
                d = diff(name, seen.pop(name, torch.empty(0)), rec.get_tensor(f"s{i}/{name}"), atol, rtol, min_sqnr)
                if worse(d, worst.get(name)):
                    worst[name] = d
    return [worst[n] for n in order]


def _stages(system, inputs: dict) -> list[dict] | None:
    """The system's own tokenization of every line, once (None: it takes pieces from its caller)."""
    return None if system.stages is None else [system.stages(line) for line in inputs["source"]]


def _system_ids(inputs: dict, stages: list[dict] | None) -> list[list[int]]:
    """What the system is fed: its own tokenization's ids (what its users get), or the original's ids
    where it takes pieces."""
    return inputs["ids"] if stages is None else [s["ids"] for s in stages]


def tokenization(system, inputs: dict, stages: list[dict] | None) -> dict:
    """Each stage's mismatches (lines numbered from 1, as editors number them)."""
    if stages is None:
        return {"lines": len(inputs["source"]), "counts": {}, "mismatches": {}, "ok": True,
                "skipped": f"{system.kind} takes pieces, not text: it is fed the original's BPE pieces"}
    found = {"moses": [], "bpe": [], "ids": []}
    for n, (line, ours) in enumerate(zip(inputs["source"], stages)):
        for stage in found:
            if ours[stage] != inputs[stage][n]:
                found[stage].append({"line": n + 1, "source": line, "port": ours[stage], "original": inputs[stage][n]})
    return {"lines": len(inputs["source"]), "mismatches": {k: v[:20] for k, v in found.items()},
            "counts": {k: len(v) for k, v in found.items()}, "ok": not any(found.values())}


def _mismatch(system, i: int, inputs: dict, a, b: dict, lp_a: list[float], lp_b: list[float]) -> dict:
    """Where two best hypotheses part, and both tokens' log-probs there under the system (the
    prefixes agree up to that step; where both end on the same token, both have a token at that step;
    a system ending on another token than the original's can stop where the original goes on: nothing
    there, and no log-prob)."""
    step = first_differing_step(a.tokens, b["tokens"])

    def at(tokens: list[int], lp: list[float]) -> tuple[str, float | None]:
        if step >= len(tokens):
            return "(ended before)", None
        return system.symbols([tokens[step]]) or "</s>", lp[step]
    (port_token, port_lp), (original_token, original_lp) = at(a.tokens, lp_a), at(b["tokens"], lp_b)
    return {"line": i + 1, "source": inputs["source"][i], "port": system.decode(a.tokens), "original": b["text"],
            "port_tokens": a.tokens, "original_tokens": b["tokens"],
            "port_score": a.score, "original_score": b["score"], "first_differing_step": step,
            "at_that_step": {"port_token": port_token, "port_token_logprob": port_lp,
                             "original_token": original_token, "original_token_logprob": original_lp}}


def decoder_mapping(system, inputs: dict) -> dict:
    """The system's decoder start, forced tokens and end token against the original's (inputs.json's
    "decoder"): a system that starts elsewhere, forces other tokens or ends on another token decodes
    another question (a wrong language token or prefix; mBART run on to </s>), whatever its hypotheses
    look like. A run recorded before the end token was kept ended on </s>, as every family then did."""
    original = inputs.get("decoder")
    ours = {"start": system.start[0], "forced": list(system.start[1]), "end": system.start.end}
    if original is None:
        return {"system": ours, "original": None, "ok": False,
                "problem": "the run does not record the original's decoder start and forced tokens (recorded by an "
                           "older workbench): record it again (`porting record`, or --record with a live original)"}
    original = {"end": EOS, **original}
    ok = ours == original
    return {"system": ours, "original": original, "ok": ok,
            **({} if ok else {"problem": f"the system starts its decoder from {ours['start']}, forces "
                              f"{ours['forced']} and ends on {ours['end']}; the original starts from "
                              f"{original['start']}, forces {original['forced']} and ends on {original['end']}"})}


def _detokenization(i: int, inputs: dict, tokens: list[int], text: str, original_text: str) -> dict:
    return {"line": i + 1, "source": inputs["source"][i], "port": text, "original": original_text,
            "port_tokens": tokens, "original_tokens": tokens, "first_differing_step": None,
            "cause": {"cause": "detokenization", "why": "the same tokens, another text: the system's "
                      "detokenization differs from the original's"}}


def _decode_all(system, rec: dict, inputs: dict, ids: list[list[int]], progress) -> tuple[dict, dict]:
    """The system's n-best of every line, decoded in the original's batches, and each line's cap."""
    options = rec["options"]
    ours, caps = {}, {}
    for batch in rec["batches"]:
        # fairseq's cap for this batch: from the original's padded width, as fairseq computed it
        cap = fairseq_cap(options, max(len(inputs["ids"][i]) for i in batch), system.max_positions)
        for i, hyps in zip(batch, system.translate([ids[i] for i in batch], options, cap)):
            ours[i], caps[i] = hyps, cap
        if progress is not None:
            progress(len(batch))
    return ours, caps


def generation(system, run: Path, inputs: dict, stages: list[dict] | None, settings: list[str] | None,
               progress=None, metric: TunedMetric = TUNING["bleu"], budget=None) -> dict:
    """Per setting: identical best hypotheses (tokens and text) out of the total, and for each
    mismatch where the two part and why (parity/causes.py). ``progress(n)`` is called as each batch of
    n lines is decoded. The system is fed its own tokenization (what its users get), or the original's
    ids where it takes pieces. budget: an approximate port's (its differences within it are caused by
    ``approximation``)."""
    ids = _system_ids(inputs, stages)
    forced = tuple((inputs.get("decoder") or {}).get("forced", ()))
    end = (inputs.get("decoder") or {}).get("end", EOS)           # runs recorded before it was kept: </s>
    out = {}
    available = sorted(p.stem for p in (run / "generation").glob("*.json"))
    for setting in settings or available:
        if setting not in available:
            out[setting] = {"error": f"not in this run (it has: {', '.join(available)})"}
            continue
        rec = _load(run, f"generation/{setting}.json")
        options = rec["options"]
        ours, caps = _decode_all(system, rec, inputs, ids, progress)
        mapping = system.mapping(options)
        mismatches, worst, texts = [], 0.0, []
        for i, theirs in enumerate(rec["hypotheses"]):
            a, b = ours[i][0], theirs[0]
            texts.append(system.decode(a.tokens))
            if a.tokens != b["tokens"]:
                lp_a, lp_b = system.log_probs(ids[i], a.tokens), system.log_probs(ids[i], b["tokens"])
                m = _mismatch(system, i, inputs, a, b, lp_a, lp_b)
                m["cause"] = causes.classify(system, ids[i], inputs["ids"][i], a.tokens, b, lp_a, lp_b, options,
                                             caps[i], mapping.not_expressible, rec.get("search_rules"), forced, end,
                                             budget)
                mismatches.append(m)
            elif texts[i] != b["text"]:
                mismatches.append(_detokenization(i, inputs, a.tokens, texts[i], b["text"]))
            else:
                worst = max(worst, abs(a.score - b["score"]))
        n = len(rec["hypotheses"])
        counts = causes.tally(mismatches)
        # the native port against fairseq: both claim fairseq's rules, every line must match; with a
        # peer on either side, every difference must be explained by tokenization, a named search rule
        # or the forced tokens' scores (the numbers agree); an approximate port's, by those or by its
        # approximation (within its budget)
        strict = system.search_rules is None and rec.get("search_rules") is None and budget is None
        outcome = _outcome(inputs["reference"], rec, texts, metric)
        ok = (not mismatches if strict else not any(counts[c] for c in causes.FAILING)) and \
            not (outcome or {}).get("significantly_worse", False)
        out[setting] = {"options": options, "mapping": mapping.settings, "not_expressible": mapping.not_expressible,
                        "identical": n - len(mismatches), "total": n, "lines": n,
                        "share_identical": (n - len(mismatches)) / n, "causes": counts, "max_score_diff": worst,
                        "outcome": outcome, "mismatches": mismatches[:50], "ok": ok, "port_texts": texts}
    return out


# A port fails a setting whose metric is below the original's with a paired bootstrap p-value under
# scoring.SIGNIFICANCE, whatever its differences' causes: explained differences can still add up to a worse system.


def _outcome(refs: list[str] | None, rec: dict, port: list[str], metric: TunedMetric) -> dict | None:
    """The port's score against the original's on this setting's best hypotheses (BLEU, or ROUGE-L for
    summaries), with the metric's paired bootstrap (None: a run recorded without references)."""
    if refs is None:
        return None
    test = metric.paired([h[0]["text"] for h in rec["hypotheses"]], port, refs)
    worse = test["system_score"] < test["baseline_score"] and test["p_value"] < SIGNIFICANCE
    return {"metric": metric.label, "port": test["system_score"], "original": test["baseline_score"],
            "p_value": test["p_value"], "significantly_worse": worse, "signature": test["signature"],
            "samples": test["samples"], **({"note": test["note"]} if "note" in test else {}),
            "rule": f"fails when the port's {metric.label} is below the original's with p < {SIGNIFICANCE}"}


def scores(gen: dict, run: Path, setting: str, metric: TunedMetric, refs: list[str]) -> dict | None:
    """The main setting's scores for both sides (BLEU and chrF, or ROUGE), with signatures, and its paired test."""
    if setting not in gen or "port_texts" not in gen[setting] or gen[setting]["outcome"] is None:
        return None
    rec = _load(run, f"generation/{setting}.json")
    original = [h[0]["text"] for h in rec["hypotheses"]]
    return {"setting": setting, "metric": metric.label, "ranked": list(metric.rank), "signature": metric.signature,
            "port": metric.score(gen[setting]["port_texts"], refs), "original": metric.score(original, refs),
            "paired_bootstrap": gen[setting]["outcome"]}


def log_prob_errors(system, run: Path, inputs: dict, ids: list[list[int]], setting: str, progress=None) -> dict:
    """Teacher-forced on the original's best hypothesis of every line of ``setting``: the per-token
    error |system − original| of the log-probs (the original's: its recorded positional scores, the
    <unk> penalty put back), as a distribution. Lines the system tokenizes otherwise are left out
    (their log-probs answer another question) and counted. ``progress(n)`` as n more lines are scored."""
    rec = _load(run, f"generation/{setting}.json")
    lines = [i for i in range(len(rec["hypotheses"])) if ids[i] == inputs["ids"][i]]
    hyps = [rec["hypotheses"][i][0] for i in lines]
    ours = []
    for k in range(0, len(lines), 32):
        chunk, chunk_hyps = lines[k:k + 32], hyps[k:k + 32]
        if hasattr(system, "log_probs_batch"):                      # the peers score a batch in one call
            ours += system.log_probs_batch([ids[i] for i in chunk], [h["tokens"] for h in chunk_hyps])
        else:
            ours += [system.log_probs(ids[i], h["tokens"]) for i, h in zip(chunk, chunk_hyps)]
        if progress is not None:
            progress(len(chunk))
    if progress is not None and len(lines) < len(rec["hypotheses"]):
        progress(len(rec["hypotheses"]) - len(lines))                # the lines left out count as done
    errors = [abs(a - b) for lp, h in zip(ours, hyps)
              for a, b in zip(lp, causes.original_log_probs(h, rec["options"]))]
    return {"setting": setting, "lines": len(lines), "left_out": len(rec["hypotheses"]) - len(lines),
            **approximation.error_distribution(errors)}


def approximate_verdict(system, run: Path, inputs: dict, stages: list[dict] | None, tensors_report: dict,
                        setting: str | None, budget, progress=None) -> dict:
    """An approximate port against its budget: the tensors' least SQNR and the log-prob error
    distribution, each bound it exceeds named."""
    ids = _system_ids(inputs, stages)
    dist = log_prob_errors(system, run, inputs, ids, setting, progress) if setting else None
    problems = [] if dist is None else approximation.log_prob_verdict(dist, budget)
    if tensors_report.get("failing"):
        worst = min(tensors_report["tensors"], key=lambda d: d["sqnr_db"])
        problems.append(f"{len(tensors_report['failing'])} tensor(s) below the budget's {budget.min_sqnr_db:g} dB: "
                        f"{', '.join(tensors_report['failing'])} (least: {worst['name']}, {worst['sqnr_db']:.1f} dB)")
    return {"type": system.approximation, "budget": budget.to_dict(), "log_probs": dist, "problems": problems,
            "ok": not problems}


def generation_work(run: Path, settings: list[str] | None, approximate: bool = False) -> int:
    """How many lines the comparison decodes (settings x lines), and for an approximate port scores
    once more teacher-forced (``log_prob_errors``): a progress display's total."""
    available = {p.stem for p in (run / "generation").glob("*.json")}
    lines = len(_load(run, "inputs.json")["source"])
    return lines * (len([s for s in (settings or available) if s in available]) + approximate)


def compare(system, run: Path, settings: list[str] | None, atol: float, rtol: float, mode: str,
            progress=None, metric: TunedMetric = TUNING["bleu"], budget=None) -> dict:
    """The whole comparison of a system against one run: tensors, tokenization, generation with the
    cause of every difference, the outcome's score (``metric``: BLEU, or ROUGE for summaries), and
    whether it passes. ``progress(n)``: as generation decodes n more lines. An approximate system
    (``system.approximation``) is held to ``budget`` (default: its type's declared one) instead of
    identity: tensors by SQNR, log-probs by their error distribution, differences by their size."""
    if system.approximation is not None and budget is None:
        budget = approximation.budget_for(system.approximation)
    path = run.parent / "manifest.json"
    manifest = json.loads(path.read_text()) if path.exists() else {}
    if "threads" in manifest:  # reproduce the recording's float reductions: same thread count
        torch.set_num_threads(manifest["threads"])
    inputs = _load(run, "inputs.json")
    stages = _stages(system, inputs)
    report = {"system": system.kind, "conditions": machine.conditions(manifest),
              "decoder": decoder_mapping(system, inputs),
              "tensors": tensors(system, run, atol, rtol, mode, budget),
              "tokenization": tokenization(system, inputs, stages),
              "generation": generation(system, run, inputs, stages, settings, progress=progress, metric=metric,
                                       budget=budget)}
    main_setting = next((s for s in ("beam5_nbest5", "greedy") if s in report["generation"]), None)
    if budget is not None:
        report["approximation"] = approximate_verdict(system, run, inputs, stages, report["tensors"], main_setting,
                                                      budget, progress)
    report["scores"] = scores(report["generation"], run, main_setting, metric, inputs["reference"]) if main_setting else None
    for g in report["generation"].values():
        g.pop("port_texts", None)
    # a peer's own tokenizer may differ from fairseq's by design (FSMT normalises punctuation): its
    # tokenization differences are reported, and counted as a cause; the verdict is on the rest
    peer_involved = system.search_rules is not None or "recorded_from" in inputs
    tokenization_ok = report["tokenization"]["ok"] or peer_involved
    report["ok"] = (report["tensors"].get("ok", True) and tokenization_ok and report["decoder"]["ok"]
                    and all(g.get("ok", False) for g in report["generation"].values())
                    and report.get("approximation", {}).get("ok", True))
    return report
