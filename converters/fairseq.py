"""fairseq checkpoint(s) + dictionaries + BPE codes -> one clean model directory.

    porting convert fairseq --checkpoint model.pt [--checkpoint model2.pt ...] --data-dir DIR --out OUT

Output layout (see converters/README.md):
  model.safetensors           the first checkpoint's tensors, each tied tensor once
  ensemble/<name>.safetensors further checkpoints (ensemble members), same layout
  config.json                 transformers' FSMT config + a "porting" section (every option, ties, ensemble)
  vocab-src.json vocab-tgt.json merges.txt tokenizer_config.json   FSMT tokenizer files
  generation_config.json      fairseq's generation defaults (and transformers' closest equivalents)
  provenance.json             source sha256, kept training args, every dropped key and why, versions
  README.md                   model card

Nothing is written unless every check passes; every problem found is reported at once.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from converters import bpe_check, layout, model_card, safetensors_io
from converters.checkpoint import CheckpointError, load_untrusted
from converters.fairseq_arch import Architecture, UnsupportedArchitecture, model_args, read_architecture, task_languages
from converters.fairseq_dict import Dictionary, DictionaryError, read_dictionary, to_fsmt_vocab
from converters.fairseq_upgrade import upgrade
from converters.outdir import atomic_dir, check_writable

FORMAT_VERSION = 1
CONVERTER = "porting-workbench fairseq converter"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# fairseq's own generation defaults (fairseq.dataclass.configs.GenerationConfig)
FAIRSEQ_GENERATION = {"beam": 5, "nbest": 1, "lenpen": 1.0, "unkpen": 0.0, "min_len": 1,
                      "max_len_a": 0.0, "max_len_b": 200, "no_repeat_ngram_size": 0, "early_stopping": "fairseq"}
# Training-only options worth keeping in the provenance (the rest of args are dropped from it).
KEPT_ARGS = ("arch", "task", "criterion", "label_smoothing", "optimizer", "lr", "max_tokens", "max_update",
             "max_epoch", "seed", "dropout", "attention_dropout", "activation_dropout", "weight_decay",
             "source_lang", "target_lang", "bpe", "tokenizer")

log = logging.getLogger(__name__)


class ConversionError(Exception):
    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__(f"{len(problems)} problem(s), nothing written:\n" + "\n".join(f"  - {p}" for p in problems))


@dataclass
class Member:
    """One checkpoint, mapped: our tensor name -> tensor, plus what was dropped or tied, and why."""
    path: Path
    sha256: str
    arch: Architecture
    args: dict
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    dropped: dict[str, str] = field(default_factory=dict)
    tied: dict[str, str] = field(default_factory=dict)
    upgrades: list[tuple[str, str]] = field(default_factory=list)
    langs: tuple[str | None, str | None] = (None, None)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _drop_reason(key: str) -> str | None:
    if key.endswith(".version") or key == "version":
        return "fairseq's module version marker, not a weight"
    if key.endswith("embed_positions._float_tensor"):
        return "dummy buffer of fairseq's sinusoidal positions; the table is regenerated from the config"
    return None


def map_state(state: dict[str, torch.Tensor], arch: Architecture, src_vocab: int, tgt_vocab: int,
              problems: list[str], label: str) -> tuple[dict, dict, dict]:
    """fairseq keys -> our names, checked against the declared layout. Returns (tensors, dropped, tied)."""
    expected = layout.expected_shapes(arch, src_vocab, tgt_vocab)
    ties = layout.ties(arch)
    tensors, dropped, tied = {}, {}, {}
    for key, value in state.items():
        reason = _drop_reason(key)
        if reason:
            dropped[key] = reason
        elif key not in expected:
            problems.append(f"{label}: unexpected tensor {key} {tuple(value.shape)}: no place for it in this architecture")
        elif tuple(value.shape) != expected[key]:
            problems.append(f"{label}: {key} has shape {tuple(value.shape)}, the architecture needs {expected[key]}")
        elif key in ties:
            canonical = ties[key]
            if canonical in state and state[canonical].shape == value.shape and not torch.equal(state[canonical], value):
                problems.append(f"{label}: {key} should be tied to {canonical} ({_tie_flag(key)}) but differs from it")
            tied[layout.PREFIX + key] = layout.PREFIX + canonical
            dropped[key] = f"tied to {canonical}: stored once under that name"
        else:
            tensors[layout.PREFIX + key] = value
    for key in expected:
        if key not in state and key not in ties:
            problems.append(f"{label}: missing tensor {key} {expected[key]}")
    for alias, canonical in ties.items():
        if alias not in state and canonical in state:
            tied[layout.PREFIX + alias] = layout.PREFIX + canonical  # e.g. no output_projection key at all
    return tensors, dropped, tied


def _tie_flag(key: str) -> str:
    return "share_all_embeddings" if key.startswith("encoder") else "share_decoder_input_output_embed"


def read_member(path: Path, problems: list[str]) -> Member | None:
    try:
        state = load_untrusted(path)
    except CheckpointError as e:
        problems.append(str(e))
        return None
    try:
        args = model_args(state)
    except ValueError as e:
        problems.append(f"{path}: {e}")
        return None
    if "model" not in state or not isinstance(state["model"], dict):
        problems.append(f"{path}: no `model` state dict")
        return None
    try:
        arch = read_architecture(args)
    except UnsupportedArchitecture as e:
        problems += [f"{path}: {p}" for p in e.problems]
        return None
    weights, notes = upgrade(state["model"])
    m = Member(path, sha256_file(path), arch, args, upgrades=notes)
    m.tensors = weights  # fairseq names for now; mapped once the dictionaries are known
    ignored = sorted(k for k in state if k not in ("model", "args", "cfg"))
    m.dropped.update({k: "training state (optimizer, scheduler, data iterator), not needed to run the model"
                      for k in ignored})
    m.langs = task_languages(state)
    return m


def convert(checkpoints: list[Path], data_dir: Path, out: Path, source_lang: str | None = None,
            target_lang: str | None = None, dtype: str = "float32", force: bool = False) -> dict:
    """Convert, or raise ConversionError listing every problem. Returns the provenance record.

    Each check runs as soon as what it needs is available, whatever else has failed, so that one
    run reports everything that is wrong."""
    problems: list[str] = []
    warnings: list[str] = []
    if dtype not in DTYPES:
        problems.append(f"--dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    if not checkpoints:
        problems.append("no --checkpoint given")
    if (p := check_writable(out, force)):
        problems.append(p)
    if not data_dir.is_dir():
        problems.append(f"--data-dir {data_dir}: not a directory")
    names = [c.stem for c in checkpoints]
    if len(set(names)) != len(names):
        problems.append(f"checkpoints must have distinct file names, got {names}")

    members = [m for c in checkpoints if (m := read_member(c, problems))]
    members_ok = len(members) == len(checkpoints) and members
    if members:
        langs = {m.langs for m in members}
        if len(langs) > 1:
            problems.append(f"ensemble members disagree on languages: {sorted(langs, key=str)}")
        source_lang = source_lang or members[0].langs[0]
        target_lang = target_lang or members[0].langs[1]
        for m in members[1:]:
            if m.arch != members[0].arch:
                diff = {k: (v, getattr(m.arch, k)) for k, v in members[0].arch.to_dict().items()
                        if getattr(m.arch, k) != v}
                problems.append(f"{m.path}: architecture differs from {members[0].path}: {diff}")
    if members_ok and (not source_lang or not target_lang):
        problems.append("languages not recorded in the checkpoint: pass --source-lang and --target-lang")

    dicts: dict[str, Dictionary] = {}
    merges: list[tuple[str, str]] | None = None
    if data_dir.is_dir() and source_lang and target_lang:
        for side, lang in (("src", source_lang), ("tgt", target_lang)):
            path = data_dir / f"dict.{lang}.txt"
            try:
                dicts[side] = read_dictionary(path)
            except FileNotFoundError:
                problems.append(f"{path}: missing (the {side} dictionary)")
            except DictionaryError as e:
                problems.append(str(e))
    if data_dir.is_dir():
        codes = data_dir / "bpecodes"
        if not codes.is_file():
            problems.append(f"{codes}: missing (the BPE codes)")
        else:
            try:
                merges = bpe_check.read_merges(codes)
            except ValueError as e:
                problems.append(str(e))

    vocabs = {}
    if len(dicts) == 2:
        try:
            vocabs = {side: to_fsmt_vocab(d) for side, d in dicts.items()}
        except DictionaryError as e:
            problems.append(str(e))
        if merges is not None:
            for side, lang in (("src", source_lang), ("tgt", target_lang)):
                fit = bpe_check.producible_share(dicts[side], merges)
                if fit.share < bpe_check.MIN_PRODUCIBLE_SHARE:
                    warnings.append(
                        f"bpecodes fit dict.{lang}.txt poorly: only {fit.share:.1%} of its {fit.checked} pieces can be "
                        f"produced by these codes (e.g. {', '.join(fit.examples)}). The codes may belong to another "
                        "model (one wmt19 en-ru archive shipped the en-de codes).")
    if members and len(dicts) == 2:
        arch = members[0].arch
        sizes = {"src": len(dicts["src"]), "tgt": len(dicts["tgt"])}
        if arch.share_all_embeddings and dicts["src"].symbols != dicts["tgt"].symbols:
            problems.append("share_all_embeddings needs one joined dictionary, but the two dict files differ")
        for m in members:
            rows_ok = True
            for key, side, lang in (("encoder.embed_tokens.weight", "src", source_lang),
                                    ("decoder.embed_tokens.weight", "tgt", target_lang)):
                if key in m.tensors and m.tensors[key].shape[0] != sizes[side]:
                    rows_ok = False
                    problems.append(f"{m.path}: {key} has {m.tensors[key].shape[0]} rows but dict.{lang}.txt gives "
                                    f"{sizes[side]} symbols (4 specials + entries): wrong dictionary for this checkpoint?")
            if rows_ok:
                m.tensors, dropped, m.tied = map_state(m.tensors, arch, sizes["src"], sizes["tgt"], problems, str(m.path))
                m.dropped.update(dropped)

    if problems:
        raise ConversionError(problems)
    for w in warnings:
        log.warning(w)

    cast = DTYPES[dtype]
    derived = layout.derived_tensors(members[0].arch)
    for m in members:
        m.tensors.update(derived)
        m.tensors = {k: (v.to(cast) if v.is_floating_point() else v) for k, v in m.tensors.items()}
    return _write(members, dicts, vocabs, merges, data_dir, out, source_lang, target_lang, dtype, force, warnings)


def _write(members, dicts, vocabs, merges, data_dir, out, source_lang, target_lang, dtype, force, warnings) -> dict:
    from converters import __version__ as converter_version

    arch: Architecture = members[0].arch
    files = ["model.safetensors"] + [f"ensemble/{m.path.stem}.safetensors" for m in members[1:]]
    incompatible = arch.fsmt_incompatibilities()
    config = model_card.fsmt_config(arch, source_lang, target_lang, len(dicts["src"]), len(dicts["tgt"]), dtype)
    config["porting"] = {
        "format_version": FORMAT_VERSION,
        "architecture": arch.to_dict(),
        "ties": members[0].tied,
        "derived": {k: "fairseq's sinusoidal table, not trained; stored so that transformers' FSMT loads "
                       "with nothing missing; the native port regenerates and checks it"
                    for k in layout.derived_tensors(arch)},
        "ensemble": files,
        "transformers_compatible": not incompatible,
        "transformers_incompatibilities": incompatible,
        "dtype": dtype,
        "special_ids": {"bos": 0, "pad": 1, "eos": 2, "unk": 3},
    }
    provenance = {
        "converter": {"name": CONVERTER, "version": converter_version, "format_version": FORMAT_VERSION},
        "torch": torch.__version__,
        "sources": {
            **{str(m.path): m.sha256 for m in members},
            **{str(data_dir / f"dict.{lang}.txt"): sha256_file(data_dir / f"dict.{lang}.txt")
               for lang in dict.fromkeys((source_lang, target_lang))},
            str(data_dir / "bpecodes"): sha256_file(data_dir / "bpecodes"),
        },
        "members": {
            f: {"checkpoint": str(m.path), "sha256": m.sha256, "dropped": m.dropped, "tied": m.tied,
                "upgraded": dict(m.upgrades), "tensors": len(m.tensors),
                "parameters": sum(t.numel() for t in m.tensors.values())}
            for f, m in zip(files, members)},
        "training_args": {k: _jsonable(members[0].args.get(k)) for k in KEPT_ARGS if k in members[0].args},
        "dictionary_shadowed_symbols": {side: d.shadowed for side, d in dicts.items() if d.shadowed},
        "warnings": warnings,
    }
    metadata = {"format": "pt", "porting.ties": json.dumps(members[0].tied), "porting.format_version": str(FORMAT_VERSION)}
    with atomic_dir(out, force) as tmp:
        problems = []
        for f, m in zip(files, members):
            (tmp / f).parent.mkdir(parents=True, exist_ok=True)
            safetensors_io.write(tmp / f, m.tensors, metadata)
            problems += safetensors_io.verify(tmp / f, m.tensors, metadata)
        _dump(tmp / "config.json", config)
        _dump(tmp / "vocab-src.json", vocabs["src"])
        _dump(tmp / "vocab-tgt.json", vocabs["tgt"])
        (tmp / "merges.txt").write_text("".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
        _dump(tmp / "tokenizer_config.json", model_card.tokenizer_config(source_lang, target_lang, arch))
        _dump(tmp / "generation_config.json", model_card.generation_config(FAIRSEQ_GENERATION))
        _dump(tmp / "provenance.json", provenance)
        (tmp / "README.md").write_text(model_card.readme(config, provenance), encoding="utf-8")
        for name in ("config.json", "vocab-src.json", "vocab-tgt.json"):
            if json.loads((tmp / name).read_text(encoding="utf-8")) != {"config.json": config, "vocab-src.json": vocabs["src"],
                                                                        "vocab-tgt.json": vocabs["tgt"]}[name]:
                problems.append(f"{name}: re-read differs from what was meant")
        if problems:
            raise ConversionError(problems)
    return provenance


def _jsonable(v):
    return v if isinstance(v, (str, int, float, bool, type(None), list)) else repr(v)


def _dump(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
