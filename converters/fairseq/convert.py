"""fairseq checkpoint(s) + dictionaries + BPE codes -> one clean model directory.

    porting convert fairseq --checkpoint model.pt [--checkpoint model2.pt ...] --data-dir DIR --out OUT

Output layout (see converters/README.md):
  model.safetensors           the first checkpoint's tensors, each tied tensor once
  ensemble/<name>.safetensors further checkpoints (ensemble members), same layout
  config.json                 transformers' FSMT config + a "porting" section (every option, ties, ensemble)
  vocab-src.json vocab-tgt.json merges.txt tokenizer_config.json   FSMT tokenizer files
  (multilingual: vocab.json sentencepiece.bpe.model tokenizer_config.json, and tokenizer.json for NllbTokenizer)
  generation_config.json      fairseq's generation defaults (and transformers' closest equivalents)
  provenance.json             source sha256, kept training args, every dropped key and why, versions
  README.md                   model card

Nothing is written unless every check passes; every problem found is reported at once.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from converters.fairseq import bpe_check, multilingual, nllb
from converters.fairseq import card as model_card
from converters.fairseq.arch import (
    Architecture,
    UnsupportedArchitecture,
    model_args,
    read_architecture,
    task_config,
    task_languages,
)
from converters.fairseq.dictionary import Dictionary, DictionaryError, read_dictionary, to_fsmt_vocab
from converters.fairseq.upgrade import upgrade
from converters.io import safetensors_io
from converters.io.atomic import OutputExists, atomic_dir, check_writable
from converters.io.checkpoint import CheckpointError, load_untrusted
from porting.files import sha256_file
from porting.format import FORMAT_VERSION, SPECIAL_IDS, TIES_METADATA, VERSION_METADATA, LanguageTokens
from porting.generation.options import fairseq_defaults
from porting.model import layout

CONVERTER = "porting-workbench fairseq converter"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
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
    task: dict = field(default_factory=dict)


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


# what a weight may be stored as; anything else (complex, float8, integers) is no fairseq transformer weight
WEIGHT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def _not_weights(state: dict) -> str | None:
    """Why a checkpoint's `model` dict is not a transformer's weights, or None."""
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            return f"model.{key} is a {type(value).__name__}, not a tensor"
        if value.dtype not in WEIGHT_DTYPES:
            return f"model.{key} is {str(value.dtype).removeprefix('torch.')}, not a float weight"
    return None


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
    if problem := _not_weights(state["model"]):
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


@dataclass
class Job:
    """One conversion: what was asked, what has been gathered so far, and every problem found."""
    checkpoints: list[Path]
    data_dir: Path
    out: Path
    source_lang: str | None
    target_lang: str | None
    dtype: str
    force: bool
    license: str | None = None
    origin: str = "fairseq checkpoints"          # what was read, for the provenance
    data_files: list[Path] = field(default_factory=list)     # sources besides the members, hashed
    generation: dict = field(default_factory=fairseq_defaults)   # fairseq's options the output defaults to
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    members: list[Member] = field(default_factory=list)
    dicts: dict[str, Dictionary] = field(default_factory=dict)
    vocabs: dict[str, dict[str, int]] = field(default_factory=dict)
    merges: list[tuple[str, str]] | None = None
    dict_file: Path | None = None                  # --dict (the multilingual family's one dictionary)
    sentencepiece: Path | None = None              # --sentencepiece, then the model found
    task: multilingual.MultilingualTask | None = None   # set for translation_multi_simple_epoch checkpoints
    lang_tokens: LanguageTokens | None = None
    lang_tok_style: str | None = None              # --lang-tok-style: overrides the checkpoint's

    @property
    def sides(self) -> tuple[tuple[str, str | None], ...]:
        return ("src", self.source_lang), ("tgt", self.target_lang)

    def dict_name(self, side: str) -> str:
        """The dictionary file a side's symbols come from, as messages name it."""
        if self.task is not None:
            return self.dict_file.name if self.dict_file else "the dictionary"
        return f"dict.{dict(self.sides)[side]}.txt"


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
    # M2M-100 builds its sinusoidal table itself (a buffer, not a weight): stored, it would be an
    # unexpected key there; FSMT loads it from the file
    derived = layout.derived_tensors(job.members[0].arch) if job.task is None else {}
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
    """Read every checkpoint; members must agree on languages and architecture."""
    members = job.members = [m for c in job.checkpoints if (m := read_member(c, job.problems))]
    if members:
        job.task = multilingual.read_task(members[0].task, job.data_dir, job.problems, str(members[0].path),
                                          job.lang_tok_style)
    if job.lang_tok_style and job.task is None and members:
        job.problems.append(f"--lang-tok-style {job.lang_tok_style}: {members[0].path} is not a multilingual model "
                            f"({multilingual.TASK})")
    if job.task is not None:
        _check_multilingual_members(job)
        return
    if members:
        langs = {m.langs for m in members}
        if len(langs) > 1:
            job.problems.append(f"ensemble members disagree on languages: {sorted(langs, key=str)}")
        job.source_lang = job.source_lang or members[0].langs[0]
        job.target_lang = job.target_lang or members[0].langs[1]
        for m in members[1:]:
            if m.arch != members[0].arch:
                diff = {k: (v, getattr(m.arch, k)) for k, v in members[0].arch.to_dict().items()
                        if getattr(m.arch, k) != v}
                job.problems.append(f"{m.path}: architecture differs from {members[0].path}: {diff}")
    if members and len(members) == len(job.checkpoints) and (not job.source_lang or not job.target_lang):
        job.problems.append("languages not recorded in the checkpoint: pass --source-lang and --target-lang")


def _check_multilingual_members(job: Job) -> None:
    """A multilingual model takes its direction at translation time; its members share one task."""
    for flag, lang in (("--source-lang", job.source_lang), ("--target-lang", job.target_lang)):
        if lang:
            job.problems.append(f"{flag} {lang}: a multilingual model ({multilingual.TASK}) is converted for all "
                                "its languages; choose the direction when translating")
    first = job.task
    for m in job.members[1:]:
        other = multilingual.read_task(m.task, job.data_dir, [], str(m.path), job.lang_tok_style)
        if other != first:
            job.problems.append(f"{m.path}: its task's language options differ from {job.members[0].path}'s")
        if m.arch != job.members[0].arch:
            job.problems.append(f"{m.path}: architecture differs from {job.members[0].path}")


def _gather_multilingual(job: Job) -> None:
    """The one shared dictionary (with the task's language tokens, as fairseq adds them) and the
    SentencePiece model."""
    found = multilingual.find_dictionary(job.data_dir, job.dict_file)
    if isinstance(found, str):
        job.problems.append(found)
    else:
        job.dict_file = found
        try:
            d = read_dictionary(found)
        except DictionaryError as e:
            job.problems.append(str(e))
        except (OSError, UnicodeDecodeError) as e:
            job.problems.append(f"{found}: not a readable UTF-8 dictionary ({e})")
        else:
            if not job.task.readable():
                pass                                   # the style or placement is wrong: reported already
            elif problems := multilingual.augment(d, job.task):
                job.problems += [f"{found}: {p}" for p in problems]
            else:
                job.dicts = {"src": d, "tgt": d}
                job.lang_tokens = multilingual.language_tokens(d, job.task)
        job.data_files.append(found)
    spm = multilingual.find_sentencepiece(job.data_dir, job.sentencepiece)
    if isinstance(spm, str):
        job.problems.append(spm)
        job.sentencepiece = None
        return
    job.sentencepiece = spm
    job.data_files.append(spm)


def _check_pieces(job: Job) -> None:
    """Every SentencePiece piece the dictionary lacks becomes <unk>: a model whose dictionary lacks
    many is the wrong pair of files."""
    if job.sentencepiece is None or "src" not in job.dicts:
        return
    try:
        fit = multilingual.piece_share(job.sentencepiece, job.dicts["src"])
    except (RuntimeError, OSError) as e:
        job.problems.append(f"{job.sentencepiece}: not a SentencePiece model ({str(e).strip() or type(e).__name__})")
        return
    if fit.share < multilingual.MIN_PIECE_SHARE:
        job.problems.append(
            f"{job.sentencepiece.name} fits {job.dict_name('src')} poorly: the dictionary holds only {fit.share:.1%} of "
            f"its {fit.checked} pieces (missing e.g. {', '.join(fit.examples)}); every missing piece would become "
            "<unk>. The SentencePiece model may belong to another model.")


def _gather_data(job: Job) -> None:
    """The two dictionaries and the BPE codes from the data directory."""
    if not job.data_dir.is_dir():
        return
    if job.task is not None:
        _gather_multilingual(job)
        return
    if job.source_lang and job.target_lang:
        for side, lang in job.sides:
            path = job.data_dir / f"dict.{lang}.txt"
            try:
                job.dicts[side] = read_dictionary(path)
            except FileNotFoundError:
                job.problems.append(f"{path}: missing (the {side} dictionary)")
            except DictionaryError as e:
                job.problems.append(str(e))
            except (OSError, UnicodeDecodeError) as e:
                job.problems.append(f"{path}: not a readable UTF-8 dictionary ({e})")
    codes = job.data_dir / "bpecodes"
    job.data_files = [job.data_dir / f"dict.{lang}.txt" for lang in dict.fromkeys((job.source_lang, job.target_lang))]
    job.data_files.append(codes)
    if not codes.is_file():
        job.problems.append(f"{codes}: missing (the BPE codes)")
        return
    try:
        job.merges = bpe_check.read_merges(codes)
    except UnicodeDecodeError as e:
        job.problems.append(f"{codes}: not UTF-8 ({e})")
    except ValueError as e:
        job.problems.append(str(e))
    except OSError as e:
        job.problems.append(f"{codes}: not readable ({e.strerror})")


def _check_vocabularies(job: Job) -> None:
    """FSMT's vocabularies from the dictionaries, and whether the BPE codes can produce their pieces."""
    if len(job.dicts) != 2:
        return
    if job.task is not None:
        _check_pieces(job)
        tokens = {job.lang_tokens.token(lang) for lang in job.lang_tokens.langs}
        job.vocabs = {"shared": {s: i for i, s in enumerate(job.dicts["src"].symbols) if s not in tokens}}
        return
    try:
        job.vocabs = {side: to_fsmt_vocab(d) for side, d in job.dicts.items()}
    except DictionaryError as e:
        job.problems.append(str(e))
    if job.merges is None:
        return
    for side, lang in job.sides:
        fit = bpe_check.producible_share(job.dicts[side], job.merges)
        if fit.share < bpe_check.MIN_PRODUCIBLE_SHARE:
            job.warnings.append(
                f"bpecodes fit dict.{lang}.txt poorly: only {fit.share:.1%} of its {fit.checked} pieces can be "
                f"produced by these codes (e.g. {', '.join(fit.examples)}). The codes may belong to another "
                "model (one wmt19 en-ru archive shipped the en-de codes).")


def _map_members(job: Job) -> None:
    """Each member's embeddings against the dictionaries, then its tensors onto the declared layout."""
    if not job.members or len(job.dicts) != 2:
        return
    arch = job.members[0].arch
    sizes = {side: len(d) for side, d in job.dicts.items()}
    if arch.share_all_embeddings and job.dicts["src"].symbols != job.dicts["tgt"].symbols:
        job.problems.append("share_all_embeddings needs one joined dictionary, but the two dict files differ")
    for m in job.members:
        found = []
        for key, (side, lang) in zip(("encoder.embed_tokens.weight", "decoder.embed_tokens.weight"), job.sides):
            if key in m.tensors and m.tensors[key].shape[0] != sizes[side]:
                what = ("4 specials + entries + the task's language tokens" if job.task is not None
                        else "4 specials + entries")
                found.append(f"{m.path}: {key} has {m.tensors[key].shape[0]} rows but {job.dict_name(side)} gives "
                             f"{sizes[side]} symbols ({what}): wrong dictionary for this checkpoint?")
        if job.task is not None:
            found = found[:1]          # one dictionary serves both sides: one mismatch to report
        job.problems += found
        if not found:
            m.tensors, dropped, m.tied = map_state(m.tensors, arch, sizes["src"], sizes["tgt"], job.problems, str(m.path))
            m.dropped.update(dropped)


def _member_files(job: Job) -> list[str]:
    return ["model.safetensors"] + [f"ensemble/{m.path.stem}.safetensors" for m in job.members[1:]]


def _config(job: Job, tokenizer_problems: list[str]) -> dict:
    """transformers' config (FSMT's, or M2M-100's for the multilingual family) with our `porting`
    section (porting/format.py's contract)."""
    arch: Architecture = job.members[0].arch
    if job.task is not None:
        incompatible = model_card.m2m100_incompatibilities(arch, job.lang_tokens, tokenizer_problems)
        config = model_card.m2m100_config(arch, len(job.dicts["src"]), job.dtype)
    else:
        incompatible = arch.fsmt_incompatibilities()
        config = model_card.fsmt_config(arch, job.source_lang, job.target_lang, len(job.dicts["src"]),
                                        len(job.dicts["tgt"]), job.dtype)
    config["porting"] = {
        "format_version": FORMAT_VERSION,
        "family": "fairseq-multilingual" if job.lang_tokens is not None else "fairseq-transformer",
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
    if job.lang_tokens is not None:
        config["porting"]["multilingual"] = job.lang_tokens.to_dict()
    return config


def _portable(path: Path, data_dir: Path) -> str:
    """A source file as the provenance and the card name it: relative to the data directory when it
    lies there, else by its file name (its sha256 identifies it); never the converting machine's
    absolute path, which would publish a local layout and differ from one machine to the next."""
    try:
        return path.resolve().relative_to(data_dir.resolve()).as_posix()
    except ValueError:
        return path.name


def _config_class(job: Job) -> str:
    return "M2M100Config" if job.task is not None else "FSMTConfig"


def _provenance(job: Job) -> dict:
    from converters import __version__ as converter_version

    first = job.members[0]
    return {
        "converter": {"name": CONVERTER, "version": converter_version, "format_version": FORMAT_VERSION},
        "converted_from": job.origin,
        "torch": torch.__version__,
        "config_written_by": (f"transformers {v} ({_config_class(job)}, GenerationConfig)"
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
    tokenizer_texts, tokenizer_problems = _tokenizer_texts(job)
    config, provenance = _config(job, tokenizer_problems), _provenance(job)
    first = job.members[0]
    metadata = {"format": "pt", TIES_METADATA: json.dumps(first.tied), VERSION_METADATA: str(FORMAT_VERSION)}
    generation = model_card.generation_config(job.generation)
    texts = {"config.json": model_card.as_transformers_writes(config["model_type"], config),
             "generation_config.json": model_card.as_transformers_writes("generation", generation),
             "provenance.json": _json_text(provenance),
             **tokenizer_texts,
             "README.md": model_card.readme(config, provenance, generation, job.license)}
    # the SentencePiece model under the name transformers' M2M100Tokenizer looks for, byte for byte
    blobs = {model_card.SENTENCEPIECE_FILE: job.sentencepiece.read_bytes()} if job.task is not None else {}
    try:
        # no marker file: provenance.json marks a conversion as the workbench's (is_our_output)
        with atomic_dir(job.out, job.force, [*job.checkpoints, job.data_dir], kind=None) as tmp:
            _write_files(job, tmp, texts, metadata, blobs)
    except OutputExists as e:                         # found once this run held the output's lock
        raise ConversionError([str(e)]) from None
    except OSError as e:                              # read-only, full, or a file where a directory should be
        raise ConversionError([f"--out {job.out}: cannot write there ({e.strerror or e})"]) from None
    return provenance


def _tokenizer_texts(job: Job) -> tuple[dict[str, str], list[str]]:
    """The tokenizer's files, and what transformers' tokenizer class cannot express. FSMT's: two
    vocabularies and the merges. The multilingual family's: one vocabulary (the native port reads it)
    and NllbTokenizer's files where the codes are NLLB-200's and it can express the model, else
    M2M100Tokenizer's config; the SentencePiece model is written beside them as bytes."""
    first = job.members[0]
    if job.task is None:
        return {"vocab-src.json": _json_text(job.vocabs["src"]), "vocab-tgt.json": _json_text(job.vocabs["tgt"]),
                "tokenizer_config.json": _json_text(model_card.tokenizer_config(job.source_lang, job.target_lang,
                                                                                 first.arch)),
                "merges.txt": "".join(f"{a} {b}\n" for a, b in job.merges)}, []
    vocab = {"vocab.json": _json_text(job.vocabs["shared"])}
    if nllb.nllb_coded(job.lang_tokens):
        symbols = job.dicts["src"].symbols
        if not (problems := nllb.tokenizer_problems(job.sentencepiece, symbols, job.lang_tokens)):
            return {**vocab, **nllb.tokenizer_files(job.sentencepiece, symbols, job.lang_tokens,
                                                    first.arch.max_source_positions)}, []
    else:
        problems = model_card.m2m100_tokenizer_problems(job.lang_tokens, len(job.vocabs["shared"]))
    return {**vocab, "tokenizer_config.json": _json_text(
        model_card.m2m100_tokenizer_config(job.lang_tokens, first.arch, len(job.vocabs["shared"])))}, problems


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


def _json_text(obj) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False) + "\n"
