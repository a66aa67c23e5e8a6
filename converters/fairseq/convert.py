"""fairseq checkpoint(s) + dictionaries + BPE codes -> one clean model directory.

    porting convert fairseq --checkpoint model.pt [--checkpoint model2.pt ...] --data-dir DIR --out OUT

Output layout (see converters/README.md):
  model.safetensors           the first checkpoint's tensors, each tied tensor once
  ensemble/<name>.safetensors further checkpoints (ensemble members), same layout
  config.json                 transformers' config (the family's class) + a "porting" section (the family,
                              every option, ties, ensemble)
  the family's tokenizer files (converters/fairseq/families/): FSMT's vocab-src.json vocab-tgt.json
  merges.txt tokenizer_config.json; the multilingual family's vocab.json sentencepiece.bpe.model
  tokenizer_config.json, and tokenizer.json for NllbTokenizer
  generation_config.json      fairseq's generation defaults (and transformers' closest equivalents)
  provenance.json             source sha256, kept training args, every dropped key and why, versions
  README.md                   model card

Nothing is written unless every check passes; every problem found is reported at once.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from converters.fairseq import card as model_card
from converters.fairseq import families
from converters.fairseq.arch import (
    Architecture,
    UnsupportedArchitecture,
    model_args,
    read_architecture,
    task_config,
    task_languages,
)
from converters.fairseq.job import ConversionError, Job, Member
from converters.fairseq.upgrade import upgrade
from converters.io import safetensors_io
from converters.io.atomic import OutputExists, atomic_dir, check_writable
from converters.io.checkpoint import CheckpointError, load_untrusted, not_weights
from porting.files import json_text, sha256_file
from porting.format import FORMAT_VERSION, SPECIAL_IDS, TIES_METADATA, VERSION_METADATA
from porting.model import layout

CONVERTER = "porting-workbench fairseq converter"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# Training-only options worth keeping in the provenance (the rest of args are dropped from it).
KEPT_ARGS = ("arch", "task", "criterion", "label_smoothing", "optimizer", "lr", "max_tokens", "max_update",
             "max_epoch", "seed", "dropout", "attention_dropout", "activation_dropout", "weight_decay",
             "source_lang", "target_lang", "bpe", "tokenizer")

log = logging.getLogger(__name__)


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
    ties = arch.ties()
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
    if problem := not_weights(state["model"]):
        problems.append(f"{path}: {problem}")
        return None
    try:
        weights, notes = upgrade(state["model"])
    except ValueError as e:
        problems.append(f"{path}: {e}")
        return None
    m = Member(path, sha256_file(path), arch, args, upgrades=notes)
    m.tensors = weights  # fairseq names for now; mapped once the dictionaries are known
    ignored = sorted(k for k in state if k not in ("model", "args", "cfg"))
    m.dropped.update({k: "training state (optimizer, scheduler, data iterator), not needed to run the model"
                      for k in ignored})
    m.langs = task_languages(state)
    m.task = task_config(state)
    return m


def convert(checkpoints: list[Path], data_dir: Path, out: Path, source_lang: str | None = None,
            target_lang: str | None = None, dtype: str = "float32", force: bool = False,
            license: str | None = None, dictionary: Path | None = None, sentencepiece: Path | None = None,
            lang_tok_style: str | None = None) -> dict:
    """Convert, or raise ConversionError listing every problem. Returns the provenance record.

    Each check runs as soon as what it needs is available, whatever else has failed, so that one
    run reports everything that is wrong: validate the arguments, gather the members and the data
    files, check them against each other, and only then cast and write."""
    job = Job(list(checkpoints), data_dir, out, source_lang, target_lang, dtype, force, license,
              dict_file=dictionary, sentencepiece=sentencepiece, lang_tok_style=lang_tok_style)
    _check_arguments(job)
    _gather_members(job)
    _gather_data(job)
    return finish(job)


def finish(job: Job) -> dict:
    """What every input shares once its members, dictionaries and merges are gathered: the
    vocabularies, the tensors onto the declared layout, and (if nothing is wrong) the cast and the write."""
    _check_vocabularies(job)
    _map_members(job)
    if job.problems:
        raise ConversionError(job.problems)
    for w in job.warnings:
        log.warning(w)
    cast = DTYPES[job.dtype]
    family = families.FAMILIES[job.family]
    derived = layout.derived_tensors(job.members[0].arch) if family.STORES_DERIVED else {}
    for m in job.members:
        m.tensors.update(derived)
        m.tensors = {k: (v.to(cast) if v.is_floating_point() else v) for k, v in m.tensors.items()}
    return _write(job)


def _check_arguments(job: Job) -> None:
    if job.dtype not in DTYPES:
        job.problems.append(f"--dtype {job.dtype!r}: choose one of {', '.join(DTYPES)}")
    if not job.checkpoints:
        job.problems.append("no --checkpoint given")
    if (p := check_writable(job.out, job.force, [*job.checkpoints, job.data_dir])):
        job.problems.append(p)
    if not job.data_dir.is_dir():
        job.problems.append(f"--data-dir {job.data_dir}: not a directory")
    names = [c.stem for c in job.checkpoints]
    if len(set(names)) != len(names):
        job.problems.append(f"checkpoints must have distinct file names, got {names}")


def _gather_members(job: Job) -> None:
    """Read every checkpoint; the first one's task names the family, which checks them together."""
    job.members = [m for c in job.checkpoints if (m := read_member(c, job.problems))]
    if job.members:
        job.family = families.family_of(job.members[0].task, job.members[0].arch.arch)
        families.FAMILIES[job.family].check_members(job)


def _gather_data(job: Job) -> None:
    """The dictionaries and the tokenizer's sources from the data directory, as the family reads them."""
    if job.data_dir.is_dir():
        families.FAMILIES[job.family].gather(job)


def _check_vocabularies(job: Job) -> None:
    if len(job.dicts) == 2:
        families.FAMILIES[job.family].check_vocabularies(job)


def _map_members(job: Job) -> None:
    """Each member's embeddings against the dictionaries, then its tensors onto the declared layout."""
    if not job.members or len(job.dicts) != 2:
        return
    arch = job.members[0].arch
    sizes = {side: len(d) for side, d in job.dicts.items()}
    family = families.FAMILIES[job.family]
    if arch.share_all_embeddings and job.dicts["src"].symbols != job.dicts["tgt"].symbols:
        job.problems.append("share_all_embeddings needs one joined dictionary, but the two dict files differ")
    for m in job.members:
        found = []
        for key, (side, lang) in zip(("encoder.embed_tokens.weight", "decoder.embed_tokens.weight"), job.sides):
            if key in m.tensors and m.tensors[key].shape[0] != sizes[side]:
                found.append(f"{m.path}: {key} has {m.tensors[key].shape[0]} rows but {job.dict_name(side)} gives "
                             f"{sizes[side]} symbols ({family.ROWS}): wrong dictionary for this checkpoint?")
        if family.ONE_DICTIONARY:
            found = found[:1]          # one dictionary serves both sides: one mismatch to report
        job.problems += found
        if not found:
            m.tensors, dropped, m.tied = map_state(m.tensors, arch, sizes["src"], sizes["tgt"], job.problems, str(m.path))
            m.dropped.update(dropped)


def _member_files(job: Job) -> list[str]:
    return ["model.safetensors"] + [f"ensemble/{m.path.stem}.safetensors" for m in job.members[1:]]


def _config(job: Job, tokenizer_problems: list[str]) -> dict:
    """transformers' config (the family's class) with our `porting` section (porting/format.py's contract)."""
    arch = job.members[0].arch
    family = families.FAMILIES[job.family]
    config, incompatible = family.transformers_config(job, tokenizer_problems)
    config["porting"] = {
        "format_version": FORMAT_VERSION,
        "family": job.family,
        "architecture": arch.to_dict(),
        "ties": job.members[0].tied,
        "derived": {k: "fairseq's sinusoidal table, not trained; stored so that transformers' FSMT loads "
                       "with nothing missing; the native port regenerates and checks it"
                    for k in layout.derived_tensors(arch)},
        "ensemble": _member_files(job),
        "transformers_compatible": not incompatible,
        "transformers_incompatibilities": incompatible,
        "dtype": job.dtype,
        "special_ids": SPECIAL_IDS.to_dict(),
    }
    config["porting"].update(family.config_section(job))
    return config


def _portable(path: Path, data_dir: Path) -> str:
    """A source file as the provenance and the card name it: relative to the data directory when it
    lies there, else by its file name (its sha256 identifies it); never the converting machine's
    absolute path, which would publish a local layout and differ from one machine to the next."""
    try:
        return path.resolve().relative_to(data_dir.resolve()).as_posix()
    except ValueError:
        return path.name


def _provenance(job: Job) -> dict:
    from converters import __version__ as converter_version

    first = job.members[0]
    return {
        "converter": {"name": CONVERTER, "version": converter_version, "format_version": FORMAT_VERSION},
        "converted_from": job.origin,
        "torch": torch.__version__,
        "config_written_by": (f"transformers {v} ({families.FAMILIES[job.family].CONFIG_CLASS}, GenerationConfig)"
                              if (v := model_card.transformers_version())
                              else "the converter (transformers not installed: the same layout, no transformers_version)"),
        "sources": {**{_portable(m.path, job.data_dir): m.sha256 for m in job.members},
                    **{_portable(f, job.data_dir): sha256_file(f) for f in job.data_files}},
        "members": {
            f: {"checkpoint": _portable(m.path, job.data_dir), "sha256": m.sha256, "dropped": m.dropped, "tied": m.tied,
                "upgraded": dict(m.upgrades), "tensors": len(m.tensors),
                "parameters": sum(t.numel() for t in m.tensors.values())}
            for f, m in zip(_member_files(job), job.members)},
        "training_args": {k: _jsonable(first.args.get(k)) for k in KEPT_ARGS if k in first.args},
        "dictionary_shadowed_symbols": {side: d.shadowed for side, d in job.dicts.items() if d.shadowed},
        "warnings": job.warnings,
    }


def _write(job: Job) -> dict:
    """Every file into a temporary directory, each re-read and checked, then swapped in at once."""
    tokenizer_texts, blobs, tokenizer_problems = families.FAMILIES[job.family].tokenizer_files(job)
    config, provenance = _config(job, tokenizer_problems), _provenance(job)
    first = job.members[0]
    metadata = {"format": "pt", TIES_METADATA: json.dumps(first.tied), VERSION_METADATA: str(FORMAT_VERSION)}
    generation = {**model_card.generation_config(job.generation), **families.FAMILIES[job.family].GENERATION_FIELDS,
                  # where the decoder starts and the search ends, as the config says (mBART's: the target language's token)
                  **{k: config[k] for k in model_card.END_TOKEN_FIELDS if k in config}}
    texts = {"config.json": model_card.as_transformers_writes(config["model_type"], config),
             "generation_config.json": model_card.as_transformers_writes("generation", generation),
             "provenance.json": json_text(provenance),
             **tokenizer_texts,
             "README.md": model_card.readme(config, provenance, *families.FAMILIES[job.family].card(config, generation),
                                            license=job.license, pipeline_tag=families.FAMILIES[job.family].PIPELINE_TAG)}
    try:
        # no marker file: provenance.json marks a conversion as the workbench's (is_our_output)
        with atomic_dir(job.out, job.force, [*job.checkpoints, job.data_dir], kind=None) as tmp:
            _write_files(job, tmp, texts, metadata, blobs)
    except OutputExists as e:                         # found once this run held the output's lock
        raise ConversionError([str(e)]) from None
    except OSError as e:                              # read-only, full, or a file where a directory should be
        raise ConversionError([f"--out {job.out}: cannot write there ({e.strerror or e})"]) from None
    return provenance


def _write_files(job: Job, tmp: Path, texts: dict[str, str], metadata: dict, blobs: dict[str, bytes]) -> None:
    """Every file of the output into `tmp`, each re-read and checked."""
    problems = []
    for name, data in blobs.items():
        (tmp / name).write_bytes(data)
        if (tmp / name).read_bytes() != data:
            problems.append(f"{name}: re-read differs from what was meant")
    for f, m in zip(_member_files(job), job.members):
        (tmp / f).parent.mkdir(parents=True, exist_ok=True)
        safetensors_io.write(tmp / f, m.tensors, metadata)
        problems += safetensors_io.verify(tmp / f, m.tensors, metadata)
    for name, text in texts.items():
        (tmp / name).write_text(text, encoding="utf-8")
        if (tmp / name).read_text(encoding="utf-8") != text:
            problems.append(f"{name}: re-read differs from what was meant")
    if problems:
        raise ConversionError(problems)


def _jsonable(v):
    return v if isinstance(v, (str, int, float, bool, type(None), list)) else repr(v)
