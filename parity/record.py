"""Record what fairseq does with the shipped example models: the golden files the port is checked
against where fairseq is absent.

    porting record [--out reference_runs/runs] [--runs ende-sep,...] [--force]

Per run (a model directory and one or several checkpoints) it writes:
  inputs.json                 source and reference lines; fairseq's Moses tokens, BPE pieces, source ids
  teacher_forced.safetensors  for a handful of sentences, teacher-forced on the reference: embeddings,
  teacher_forced.json         every encoder/decoder layer's output, final layer norms, logits, log-probs
  generation/<setting>.json   per line, every hypothesis: token ids, BPE string, detokenized text,
                              score and positional scores (floats written exactly)
and one manifest.json for all runs: versions, settings, chunking, thread count, sha256 of every file.

Generation runs over the test set in fixed chunks of consecutive lines (one ``hub.generate`` call
each), so a replay of any chunk reproduces fairseq's batching, and with it its numbers, exactly.
"""
from __future__ import annotations

import json
import platform
import shutil
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from parity import shipped
from parity.settings import ENSEMBLE_SETTINGS, SETTINGS, TRANSLATION_SETTINGS
from porting.files import sha256_file as sha256
from porting.format import EOS
from porting.progress import progress_bar

CHUNK_SIZE = 50          # lines per hub.generate call
TEACHER_FORCED = 8       # sentences recorded layer by layer (the first N of the test set)
THREADS = 1              # intra-op threads while recording: float reductions can depend on it


@dataclass(frozen=True)
class Run:
    name: str
    model: str                       # entry of reference_runs/models/catalog.json
    checkpoints: tuple[str, ...]     # several = an ensemble
    settings: tuple[str, ...] = TRANSLATION_SETTINGS
    teacher_forced: bool = True
    direction: str | None = None     # a multilingual model's "en-fr"; None: the bilingual model's own

    def languages(self) -> tuple[str, str]:
        if self.direction:
            src, tgt = self.direction.split("-")
            return src, tgt
        m = shipped.catalog()[self.model]
        return m.source_lang, m.target_lang


RUNS = (
    Run("ende-sep", "ende-sep", ("model2.pt",)),
    Run("ende-sep-ensemble", "ende-sep", ("model1.pt", "model2.pt"), ENSEMBLE_SETTINGS, teacher_forced=False),
    Run("ende-joined", "ende-joined", ("model.pt",)),
    # the multilingual model in every trained direction, every setting
    *(Run(f"m2m-{d}", "m2m-enfres", ("model.pt",), direction=d) for d in ("en-fr", "fr-en", "en-es", "es-en")),
    # the BART-style summarizer: every setting, and BART's summarization one
    Run("bart-man", "bart-man", ("model.pt",), tuple(SETTINGS)),
    # the mBART-style translation model: the generator ends on [ro_RO], every translation setting
    Run("mbart-enro", "mbart-enro", ("model.pt",)),
)


# ---------------------------------------------------------------- pieces a replay also uses

def open_run(run: Run):
    from parity.fairseq_hub import load_hub

    m = shipped.catalog()[run.model]
    return load_hub(m.path, run.checkpoints, *run.languages()), m


def hypothesis_record(hub, hypo) -> dict:
    from parity.fairseq_hub import hypothesis_text

    tokens = hypo["tokens"].tolist()
    bpe, text = hypothesis_text(hub, hypo["tokens"])
    return {
        "tokens": tokens,
        "bpe": bpe,
        "text": text,
        # float32 values become Python floats exactly; JSON keeps every digit.
        "score": float(hypo["score"]),
        "positional_scores": hypo["positional_scores"].tolist(),
    }


def generate_chunk(hub, lines: list[str], options: dict, tokenized=None) -> list[list[dict]]:
    """fairseq's hypotheses for one chunk of source lines (one ``hub.generate`` call)."""
    from parity.fairseq_hub import encode, generate

    options = dict(options)
    beam = options.pop("beam", 5)
    tokenized = tokenized if tokenized is not None else [encode(hub, line) for line in lines]
    return [[hypothesis_record(hub, h) for h in hypos]
            for hypos in generate(hub, tokenized, beam=beam, **options)]


def chunk_batches(hub, tokenized) -> list[list[int]]:
    """The batches fairseq's hub forms from one tokenized chunk (indices into the chunk, in batch order).

    fairseq sorts by length and packs up to ``max_tokens``; since ``max_len_a`` applies to a batch's
    padded width, a replay must use the same batches to reproduce the same length limits."""
    from parity.fairseq_hub import quiet_fairseq

    with quiet_fairseq():
        return [batch["id"].tolist() for batch in hub._build_batches(tokenized, False)]


def teacher_forced(hub, source: str, reference: str, target_lang: str) -> tuple[dict, list[str]]:
    """Named tensors, in forward order, of each model's forward pass on (source, reference).

    Shapes: token tensors [T]; states [T, C] (batch of one, batch dimension dropped); logits and
    log-probs [T_tgt, V]. The decoder input is fairseq's: its start token (</s>, or a multilingual
    model's language token) followed by the target without its final </s>.
    """
    import torch

    from parity.fairseq_hub import encode, model_input, reset_beam, teacher_forced_target

    reset_beam(hub, 1)                                                       # one sentence, no beam
    src = model_input(hub, encode(hub, source)).unsqueeze(0)                 # [1, S]
    tgt, bos = teacher_forced_target(hub, reference, target_lang)
    tgt = tgt.unsqueeze(0)                                                   # [1, T]
    prev = torch.cat([tgt.new_full((1, 1), bos), tgt[:, :-1]], dim=1)
    tensors: dict[str, torch.Tensor] = {"src_tokens": src[0], "target": tgt[0], "prev_output_tokens": prev[0]}
    order = list(tensors)
    model = hub.models[0]
    captured: list[tuple[str, torch.Tensor]] = []

    def keep(name):
        def hook(_module, _inputs, output):
            x = output[0] if isinstance(output, tuple) else output
            captured.append((name, x[:, 0]))                              # [T, B, C] -> [T, C]
        return hook

    def keep_input(name):
        def hook(_module, inputs):
            captured.append((name, inputs[0][:, 0]))                      # [T, B, C] -> [T, C]
        return hook

    from parity.names import of_fairseq_model

    handles = []
    for b in of_fairseq_model(model):      # the declared correspondence; logits/lprobs are taken below
        if not b.fairseq_module:
            continue
        module = model.get_submodule(b.fairseq_module)
        # the decoder's final norm runs on [T, B, C] too, before its transpose to batch-first
        handles.append(module.register_forward_pre_hook(keep_input(b.name)) if b.taken_from == "input"
                       else module.register_forward_hook(keep(b.name)))
    try:
        with torch.no_grad():
            encoder_out = model.encoder(src, src_lengths=torch.tensor([src.shape[1]]))
            logits, extra = model.decoder(prev, encoder_out=encoder_out)          # [1, T, V]
            lprobs = model.get_normalized_probs((logits, extra), log_probs=True)  # [1, T, V]
    finally:
        for h in handles:
            h.remove()
    for name, x in captured:
        tensors[name] = x.detach().clone().contiguous()
        order.append(name)
    tensors["decoder.logits"] = logits[0].contiguous()
    tensors["decoder.lprobs"] = lprobs[0].float().contiguous()
    order += ["decoder.logits", "decoder.lprobs"]
    return tensors, order


# ---------------------------------------------------------------- recording

def decoder_record(start: int, forced, end: int = EOS) -> dict:
    """inputs.json's "decoder": the original's start token, the tokens it forces as the first generated
    ones (a multilingual model's target-language token) and the token that ends its hypotheses (mBART's
    target-language token; runs recorded before it was kept ended on </s>). The harness holds every
    system to them: a system that differs there has a mapping fault, never a search rule (parity/causes.py)."""
    return {"start": int(start), "forced": [int(t) for t in forced], "end": int(end)}



def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=None, separators=(",", ":")) + "\n",
                    encoding="utf-8")


def record_run(run: Run, out: Path, limit: int | None = None) -> None:
    """One run on its direction's test set (the first `limit` lines)."""
    source, reference = shipped.test_set(*run.languages())
    hub, _ = open_run(run)
    record_hub(hub, run.languages()[1], run.settings, run.teacher_forced, out, source[:limit], reference[:limit],
               label=run.name)


def record_hub(hub, target_lang: str, settings, with_teacher_forced: bool, out: Path, source: list[str],
               reference: list[str] | None, label: str = "") -> None:
    """Record one loaded fairseq hub (a model or an ensemble) into `out`.

    Without references, the teacher-forced targets are the original's own beam-5 translations
    (then no BLEU can be computed, and inputs.json says so with "reference": null)."""
    from safetensors.torch import save_file

    from parity.fairseq_hub import decoder_start, encode, model_input, translate_lines

    moses = [hub.tokenize(line) for line in source]
    bpe = [hub.apply_bpe(t) for t in moses]
    # ids as the encoder reads them: a multilingual task's language token in its place, BART's <s> first
    # (hub.encode is tokenize, apply_bpe and binarize; BARTHubInterface's puts <s> in front: fairseq_hub.encode)
    write_json(out / "inputs.json", {
        "source": source, "reference": reference,
        "moses": [t.split() for t in moses], "bpe": [b.split() for b in bpe],
        "ids": [model_input(hub, encode(hub, line)).tolist() for line in source],
        "decoder": decoder_record(*decoder_start(hub, target_lang))})

    if with_teacher_forced:
        n = min(TEACHER_FORCED, len(source))
        targets = reference[:n] if reference is not None else translate_lines(hub, source[:n], beam=5)
        all_tensors, orders = {}, []
        for i in range(n):
            tensors, order = teacher_forced(hub, source[i], targets[i], target_lang)
            all_tensors.update({f"s{i}/{k}": v for k, v in tensors.items()})
            orders.append(order)
        save_file(all_tensors, str(out / "teacher_forced.safetensors"))
        write_json(out / "teacher_forced.json", {
            "sentences": list(range(n)), "forward_order": orders[0],
            "key_format": "s<sentence>/<tensor>",
            "layout": "token tensors [T]; states [T, C] for a batch of one; logits and lprobs [T_tgt, V]",
            **({} if reference is not None else {"targets": "the original's own beam-5 translations"})})

    for name in settings:
        options = SETTINGS[name]
        hyps, batches = [], []
        with progress_bar(len(source), f"recording {label} {name}") as bar:
            for start in range(0, len(source), CHUNK_SIZE):
                lines = source[start:start + CHUNK_SIZE]
                tokenized = [encode(hub, line) for line in lines]
                hyps += generate_chunk(hub, lines, options, tokenized)
                batches += [[start + i for i in b] for b in chunk_batches(hub, tokenized)]
                bar.update(len(lines))
        write_json(out / "generation" / f"{name}.json",
                   {"setting": name, "options": options, "batches": batches, "hypotheses": hyps})


def versions() -> dict:
    names = ["torch", "fairseq-fixed", "sacremoses", "fastBPE", "sacrebleu", "numpy"]
    found = {}
    for n in names:
        try:
            found[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            found[n] = None
    import torch

    # the instruction set the kernels dispatched to: floats differ between them (parity/machine.py)
    return {"python": platform.python_version(), "platform": platform.platform(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), **found}


def record_runs(wanted: list[Run], out: Path, limit: int | None = None) -> None:
    """Record each run into `out`, written into a temporary sibling and then swapped in: a failure
    leaves the old runs untouched. Runs of `out` not re-recorded are kept as they are."""
    import torch

    torch.set_num_threads(THREADS)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".record-", dir=out.parent))
    try:
        for r in wanted:
            print(f"recording {r.name} ({'+'.join(r.checkpoints)}, {'-'.join(r.languages())})", flush=True)
            record_run(r, tmp / r.name, limit)
        kept = _keep_other_runs(wanted, out, tmp)
        manifest = _manifest(wanted + kept, tmp)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _keep_other_runs(wanted: list[Run], out: Path, tmp: Path) -> list[Run]:
    """Copy the runs of an existing `out` that are not being re-recorded into `tmp`; returns them."""
    names = {r.name for r in wanted}
    kept = [r for r in RUNS if r.name not in names and (out / r.name).is_dir()]
    for r in kept:
        shutil.copytree(out / r.name, tmp / r.name)
    return kept


def _test_set(run: Run, tmp: Path) -> dict:
    files = shipped.test_set_files(*run.languages())
    lines = len(json.loads((tmp / run.name / "inputs.json").read_text(encoding="utf-8"))["source"])
    return {"source": f"reference_runs/data/{files[0].name}", "reference": f"reference_runs/data/{files[1].name}",
            "lines": lines, "sha256": {p.name: sha256(p) for p in files}}


def _manifest(runs: list[Run], tmp: Path) -> dict:
    catalog = shipped.catalog()
    return {
        "versions": versions(), "threads": THREADS, "chunk_size": CHUNK_SIZE,
        "settings": SETTINGS,
        "runs": {r.name: {"model": r.model, "checkpoints": list(r.checkpoints), "settings": list(r.settings),
                          "teacher_forced": r.teacher_forced,
                          "source_lang": r.languages()[0], "target_lang": r.languages()[1],
                          "test_set": _test_set(r, tmp),
                          "model_files": {p.name: sha256(p) for p in sorted(catalog[r.model].path.iterdir())}}
                 for r in sorted(runs, key=lambda r: [x.name for x in RUNS].index(r.name))},
        "files": {str(p.relative_to(tmp)): sha256(p) for p in sorted(tmp.rglob("*")) if p.is_file()},
    }


def record_live(spec: str, languages: tuple[str, str], source: list[str], reference: list[str] | None,
                settings: list[str], out: Path) -> Path:
    """Run live fairseq (spec: MODEL_DIR[:a.pt:b.pt]) in these languages and record it into `out`."""
    from parity.fairseq_hub import load_hub

    model_dir, checkpoints = fairseq_spec(spec)
    src, tgt = languages
    hub = load_hub(model_dir, checkpoints, src, tgt)
    record_hub(hub, tgt, settings, len(checkpoints) <= 1, out, source, reference, label="fairseq")
    return out


def fairseq_spec(spec: str) -> tuple[str, list[str]]:
    """MODEL_DIR[:a.pt:b.pt] -> (MODEL_DIR, checkpoints): an ensemble written as fairseq writes it
    (colons), or with commas; model.pt when none is named."""
    model_dir, _, ckpts = spec.partition(":")
    return model_dir, [c for c in ckpts.replace(",", ":").split(":") if c] or ["model.pt"]


def record_system(system, source: list[str], reference: list[str] | None, settings: list[str], out: Path) -> Path:
    """Record a system (parity/systems.py) as the original, in the recorder's format, so that any
    other system can be compared against it as against fairseq: ``--original transformers:DIR``
    verifies the port where fairseq is not installed. Positional scores follow fairseq's convention
    (the model's log-probs, less unkpen at <unk>), the batches are the recorder's chunks sorted by
    length, and the run says which system made it and by which search rules."""
    import torch
    from safetensors.torch import save_file

    from parity.contract import fairseq_cap
    from porting.format import UNK

    stages = [system.stages(line) for line in source]
    ids = [s["ids"] for s in stages]
    write_json(out / "inputs.json", {"source": source, "reference": reference, "moses": [s["moses"] for s in stages],
                                     "bpe": [s["bpe"] for s in stages], "ids": ids,
                                     "decoder": decoder_record(*system.start), "recorded_from": system.label})
    if system.boundaries is not None:
        n = min(TEACHER_FORCED, len(source))
        targets = ([system.target_ids(r) for r in reference[:n]] if reference is not None else
                   [h[0].tokens for h in system.translate(ids[:n], SETTINGS["beam5_nbest5"])])
        tensors, order = {}, None
        for i in range(n):
            src, target = torch.tensor(ids[i]), torch.tensor(targets[i])
            prev = torch.tensor([system.start[0]] + targets[i][:-1])
            seen = system.boundaries(src, prev)
            order = ["src_tokens", "target", "prev_output_tokens", *(b.name for b in system.boundary_table())]
            tensors.update({f"s{i}/src_tokens": src, f"s{i}/target": target, f"s{i}/prev_output_tokens": prev})
            tensors.update({f"s{i}/{k}": v.contiguous() for k, v in seen.items()})
        save_file(tensors, str(out / "teacher_forced.safetensors"))
        write_json(out / "teacher_forced.json", {
            "sentences": list(range(n)), "forward_order": order, "key_format": "s<sentence>/<tensor>",
            "layout": "token tensors [T]; states [T, C] for a batch of one; logits and lprobs [T_tgt, V]",
            **({} if reference is not None else {"targets": "the original's own beam-5 translations"})})
    for name in settings:
        options = SETTINGS[name]
        batches = [sorted(range(start, min(start + CHUNK_SIZE, len(source))), key=lambda i: len(ids[i]))
                   for start in range(0, len(source), CHUNK_SIZE)]
        hyps: dict[int, list] = {}
        with progress_bar(len(source), f"recording {system.kind} {name}") as bar:
            for batch in batches:
                cap = fairseq_cap(options, max(len(ids[i]) for i in batch), system.max_positions)
                for i, found in zip(batch, system.translate([ids[i] for i in batch], options, cap)):
                    hyps[i] = found
                bar.update(len(batch))
        records = []
        for i in range(len(source)):
            best = hyps[i][0].tokens
            raw = system.log_probs(ids[i], best)
            positional = [lp - (options.get("unkpen", 0.0) if t == UNK else 0.0) for lp, t in zip(raw, best)]
            records.append([{"tokens": best, "bpe": system.symbols(best), "text": system.decode(best),
                             "score": sum(positional) / len(best) ** options.get("lenpen", 1.0),
                             "positional_scores": positional}])
        mapping = system.mapping(options)
        write_json(out / "generation" / f"{name}.json",
                   {"setting": name, "options": options, "batches": batches, "hypotheses": records,
                    "recorded_from": system.label, "search_rules": system.search_rules,
                    "mapping": mapping.settings, "not_expressible": mapping.not_expressible})
    return out
