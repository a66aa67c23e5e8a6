"""Running the original: fairseq's hub interface on a local model directory.

Everything that touches fairseq goes through here, imported lazily.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from porting.format import BART, BILINGUAL, LANG_TOK_STYLES, MBART, MULTILINGUAL, DecoderStart


class FairseqMissing(RuntimeError):
    pass


def fairseq_available() -> bool:
    try:
        import fairseq  # noqa: F401  (only: is it importable?)
    except Exception:  # ImportError, or fairseq's own import-time failures on unsupported Pythons
        return False
    return True


# What fairseq says while it loads and batches that is no news to a user of the workbench: torch's
# warning about the switch fairseq_unpickling sets on purpose, its data loader's about pinning memory
# on a machine with no accelerator, and fastBPE's two lines on loading its codes, which its C++ writes
# straight to the process's standard error. All shown with -v (the parity logger at DEBUG).
QUIET_WARNINGS = ("Environment variable TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD detected",
                  "'pin_memory' argument is set as true but no accelerator is found")
QUIET_LINES = re.compile(r"Loading codes from .* \.\.\.|Read \d+ codes from the codes file\.")


@contextlib.contextmanager
def quiet_fairseq():
    """The lines above held back; everything else fairseq writes to standard error passes through."""
    import sys
    import tempfile
    import warnings

    if logging.getLogger("parity").isEnabledFor(logging.DEBUG):
        yield
        return
    with warnings.catch_warnings(), tempfile.TemporaryFile() as caught:
        for message in QUIET_WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=UserWarning)
        sys.stderr.flush()
        saved = os.dup(2)                       # the C-level standard error: fastBPE's C++ writes there
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            _flush_c_stdio()
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            kept = [line for line in caught.read().decode("utf-8", "replace").splitlines(keepends=True)
                    if not QUIET_LINES.fullmatch(line.rstrip("\n"))]
            sys.stderr.write("".join(kept))


def _flush_c_stdio() -> None:
    import ctypes

    ctypes.CDLL(None).fflush(None)


@contextlib.contextmanager
def fairseq_unpickling():
    """fairseq calls ``torch.load`` without ``weights_only``; torch >= 2.6 then refuses its
    checkpoints (``Unsupported global: argparse.Namespace``). This switch only affects calls that
    do not pass ``weights_only`` -- fairseq's -- so our own explicit ``weights_only=True`` loads stay
    safe. It is set only while fairseq loads the models we ask it to run."""
    key = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"
    old = os.environ.get(key)
    os.environ[key] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old


@contextlib.contextmanager
def mapped_checkpoints():
    """fairseq reads a checkpoint whole (``torch.load`` on an open file), its optimizer state too: a
    wmt19-size training checkpoint is 2.9 GB for 0.97 GB of weights, all of it resident at once. While
    fairseq loads, a checkpoint it opens as a file is read memory-mapped instead (``torch.load(path,
    mmap=True)``, torch's zip format): only the tensors fairseq copies into its model are read, and
    the mapping goes with the state dict once the model is built. Same values, same unpickling."""
    import torch

    load = torch.load

    def mapped(f, *args, **kwargs):
        name = getattr(f, "name", None)
        if isinstance(name, str) and os.path.isfile(name) and not kwargs.get("mmap"):
            import zipfile

            if zipfile.is_zipfile(name):                 # torch's own format; older pickles are read as before
                return load(name, *args, mmap=True, **kwargs)
        return load(f, *args, **kwargs)
    torch.load = mapped
    try:
        yield
    finally:
        torch.load = load


def mend_translation_from_pretrained_bart() -> None:
    """fairseq 0.12's ``translation_from_pretrained_bart`` (mBART's fine-tuning task) reads ``self.args``
    in load_dataset, build_generator and build_dataset_for_inference, but its parent TranslationTask
    became a dataclass task that keeps only ``self.cfg``: every use raises ``AttributeError: ... no
    attribute 'args'`` (fairseq #3169, #4479, never fixed). The task is still built from an argparse
    Namespace (it registers no dataclass), so ``args`` is that Namespace: kept as ``self.args`` too.
    The one place the workbench mends it: the original's hub (ORIGINALS[MBART]) and the shipped model's
    fairseq-train (reference_runs/tools/build_mbart.py) both call this. Idempotent."""
    from fairseq.tasks.translation_from_pretrained_bart import TranslationFromPretrainedBARTTask as Task

    if getattr(Task.__init__, "_porting_mended", False):
        return
    unmended = Task.__init__

    def __init__(self, args, src_dict, tgt_dict):
        self.args = args
        unmended(self, args, src_dict, tgt_dict)

    __init__._porting_mended = True
    Task.__init__ = __init__


def load_hub(model_dir: str | Path, checkpoints: str | list[str] | tuple[str, ...],
             source_lang: str, target_lang: str):
    """fairseq's hub interface on a directory in fairseq's release layout: wmt19's (``model*.pt``,
    ``dict.<lang>.txt``, ``bpecodes``: the Moses + fastBPE pipeline its hub models use), M2M-100's
    (checkpoint, SentencePiece model, model dictionary; then the languages choose the direction) or
    bart.large.cnn's (checkpoint, ``dict.<lang>.txt``, GPT-2's ``encoder.json`` and ``vocab.bpe``: a
    BARTHubInterface). Several checkpoints form an ensemble, as fairseq's ``a.pt:b.pt`` syntax does.

    Languages must be given: fairseq's Moses tokenizer otherwise detokenizes with English rules.
    """
    root_level = logging.getLogger().level
    original = ORIGINALS[release_family(model_dir)]
    try:
        model_class = original.model_class()
    except Exception as e:  # pragma: no cover - depends on the installation
        raise FairseqMissing(f"fairseq is not importable here ({e}); run `make setup`") from e
    # importing fairseq runs a basicConfig(level=DEBUG) in one of its tasks: matplotlib alone then
    # logs ~2,000 font-manager lines. Put the root level back; fairseq's own loggers to warnings.
    logging.getLogger().setLevel(root_level)
    for name in list(logging.root.manager.loggerDict):
        if name.split(".")[0] in ("fairseq", "fairseq_cli", "matplotlib", "hydra", "urllib3", "PIL"):
            logging.getLogger(name).setLevel(max(logging.WARNING, root_level))
    if not isinstance(checkpoints, str):
        checkpoints = ":".join(checkpoints)
    model_dir = Path(model_dir).resolve()
    def load(files: str):
        return model_class.from_pretrained(str(model_dir), checkpoint_file=files, data_name_or_path=".",
                                           source_lang=source_lang, target_lang=target_lang,
                                           **original.release_options(model_dir))
    with fairseq_unpickling(), mapped_checkpoints(), quiet_fairseq():
        hub = load(checkpoints)
        members = checkpoints.split(":")
        if len(hub.models) < len(members):
            # BARTModel.from_pretrained loads every checkpoint of "a.pt:b.pt" and hands BARTHubInterface the
            # first alone: its ensemble is silently one model (porting/NOTES.md). fairseq-generate runs them
            # all: so does the original here, each member loaded as the hub loads the first
            import torch

            hub.models = torch.nn.ModuleList([*hub.models, *(load(c).models[0] for c in members[len(hub.models):])])
    hub.eval()
    return hub


# ---------------------------------------------------------------- each family, as fairseq runs it
# The bilingual family (--task translation, wmt19's release layout): Moses + fastBPE, the decoder
# starts from </s>, nothing is forced. The multilingual one (translation_multi_simple_epoch, M2M-100's
# layout): SentencePiece, and the task's language tokens, which its inference dataset and
# inference_step put in.

def _bilingual_release(model_dir: Path) -> dict:
    return {"bpe": "fastbpe", "bpe_codes": str(model_dir / "bpecodes"), "tokenizer": "moses"}


def _multilingual_release(model_dir: Path) -> dict:
    """SentencePiece with the one model dictionary given as fairseq-generate's --fixed-dictionary
    (as M2M-100's README runs it)."""
    from converters.fairseq.multilingual import find_dictionary, find_sentencepiece

    found = {"dictionary": find_dictionary(model_dir, None), "sentencepiece": find_sentencepiece(model_dir, None)}
    if problems := [v for v in found.values() if isinstance(v, str)]:
        raise FileNotFoundError("; ".join(problems))
    return {"bpe": "sentencepiece", "sentencepiece_model": str(found["sentencepiece"]),
            "fixed_dictionary": str(found["dictionary"])}


def _bilingual_start(hub, target_lang: str) -> tuple[int, tuple[int, ...]]:
    return hub.tgt_dict.eos(), ()


def _multilingual_start(hub, target_lang: str) -> tuple[int, tuple[int, ...]]:
    """translation_multi_simple_epoch's inference_step: the target language's token forced as the first
    generated token (prefix_tokens), or made the start token with lang_tok_replacing_bos_eos; nothing
    without --decoder-langtok."""
    _, spec = hub.task.args.langtoks["main"]
    if not spec:
        return hub.tgt_dict.eos(), ()
    tok = hub.task.data_manager.get_decoder_langtok(target_lang, spec)
    return (tok, ()) if hub.task.args.lang_tok_replacing_bos_eos else (hub.tgt_dict.eos(), (tok,))


def _bilingual_input(hub, tokens):
    return tokens


def _multilingual_input(hub, tokens):
    # the collater, not the item: TransformEosLangPairDataset (lang_tok_replacing_bos_eos) swaps </s> there
    dataset = hub.task.build_dataset_for_inference([tokens], [len(tokens)])
    return dataset.collater([dataset[0]])["net_input"]["src_tokens"][0]


def _multilingual_text_ids(hub, ids: list[int]) -> list[int]:
    """model_input undone: the language token out of what the encoder reads (the task puts it back)."""
    if hub.task.args.encoder_langtok is None:
        return ids
    return ids[:-1] + [hub.src_dict.eos()] if hub.task.args.lang_tok_replacing_bos_eos else ids[1:]


def _bilingual_target(hub, reference: str, target_lang: str):
    """Moses in the target language's rules (hub.tokenize uses the source's), BPE, start </s>."""
    from fairseq.data.encoders.moses_tokenizer import MosesTokenizer, MosesTokenizerConfig

    moses = MosesTokenizer(MosesTokenizerConfig(source_lang=target_lang, target_lang=target_lang))
    text = hub.apply_bpe(moses.encode(reference))
    return hub.tgt_dict.encode_line(text, add_if_not_exist=False).long(), hub.tgt_dict.eos()


def _multilingual_target(hub, reference: str, target_lang: str):
    """As the task's training data: the forced target-language token prepended to the target
    (tgt_dataset_tranform_func), or made the start token with lang_tok_replacing_bos_eos."""
    import torch

    tgt = hub.tgt_dict.encode_line(hub.apply_bpe(reference), add_if_not_exist=False).long()
    start, forced = _multilingual_start(hub, target_lang)
    return torch.cat([tgt.new_tensor(list(forced)), tgt]) if forced else tgt, start


def _bilingual_stripped(hub) -> set[int]:
    return set()


def _multilingual_stripped(hub) -> set[int]:
    """The task's build_generator: symbols_to_strip_from_output, the forced target-language token."""
    _, spec = hub.task.args.langtoks["main"]
    if not spec or hub.task.args.lang_tok_replacing_bos_eos:
        return set()
    return {hub.task.data_manager.get_decoder_langtok(hub.task.args.target_lang, spec)}


# The BART family (--arch bart_*, bart.large.cnn's release layout): the hub is BARTHubInterface, whose
# encode() puts <s> first (so what it gives is what the encoder reads) and whose generate() forces <s>
# as the first generated token; GPT-2's BPE runs from the release's own files (fairseq's defaults are
# URLs, fetched at run time).

def _bart_release(model_dir: Path) -> dict:
    return {"bpe": "gpt2", "gpt2_encoder_json": str(model_dir / "encoder.json"),
            "gpt2_vocab_bpe": str(model_dir / "vocab.bpe")}


def _bart_encode(hub, line: str):
    """BARTHubInterface.encode with one change: a GPT-2 id the dictionary lacks becomes <unk>, as
    fairseq-generate's binarizer makes it. The hub's own encode calls encode_line with its default
    add_if_not_exist=True, which appends the symbol past the embedding, and the model then fails with
    an IndexError (porting/NOTES.md); the rest (<s> first, the cut to max_positions - 2) is the hub's."""
    ids = hub.bpe.encode(line).split(" ")
    ids = ids[:min(hub.max_positions) - 2]
    return hub.task.source_dictionary.encode_line("<s> " + " ".join(ids) + " </s>", append_eos=False,
                                                  add_if_not_exist=False).long()


def _bart_start(hub, target_lang: str) -> tuple[int, tuple[int, ...]]:
    return hub.tgt_dict.eos(), (hub.tgt_dict.bos(),)


def _bart_target(hub, reference: str, target_lang: str):
    """As the hub encodes a text: <s>, its GPT-2 ids, </s>; the decoder starts from </s>."""
    import torch

    tgt = hub.tgt_dict.encode_line(hub.apply_bpe(reference), add_if_not_exist=False).long()
    return torch.cat([tgt.new_tensor([hub.tgt_dict.bos()]), tgt]), hub.tgt_dict.eos()


def _transformer_model_class():
    from fairseq.models.transformer import TransformerModel

    return TransformerModel


def _bart_archs() -> tuple[str, ...]:
    """The architectures the BART family claims, as the converter declares them."""
    from converters.fairseq.families import bart

    return bart.ARCHS


def _bart_model_class():
    from fairseq.models.bart import BARTModel

    return BARTModel


# The mBART family (--task translation_from_pretrained_bart, mbart.cc25 fine-tuned: sentence.bpe.model and
# the dictionary as dict.<xx_YY>.txt per side). Run as fairseq-generate runs it (mBART's README): the hub
# is BARTHubInterface, but not its encode (<s> first, BART's) nor its generate (<s> forced): the source is
# its pieces and </s>, the task's inference dataset appends the source language's token, and the
# task's generator starts from, and ends on, the target language's token. The task needs the `args`
# mend (mend_translation_from_pretrained_bart) before it is built.

_MBART_DICTIONARY = re.compile(r"dict\.[a-z]{2,3}_[A-Z]{2}\.txt")      # mBART's codes as the task's suffixes


def _is_mbart_release(model_dir: Path) -> bool:
    return (model_dir / "sentence.bpe.model").is_file() and any(
        _MBART_DICTIONARY.fullmatch(p.name) for p in model_dir.glob("dict.*.txt"))


def _mbart_release(model_dir: Path) -> dict:
    return {"bpe": "sentencepiece", "sentencepiece_model": str(model_dir / "sentence.bpe.model")}


def _mbart_model_class():
    mend_translation_from_pretrained_bart()
    return _bart_model_class()


def _mbart_encode(hub, line: str):
    """fairseq-generate's binarized source: the pieces (a piece the dictionary lacks is <unk>) and </s>."""
    return hub.task.source_dictionary.encode_line(hub.apply_bpe(line), add_if_not_exist=False).long()


def _mbart_start(hub, target_lang: str) -> DecoderStart:
    """The generator's eos, the target language's token: the decoder's start and the hypotheses' end."""
    tok = _mbart_token(hub, target_lang)
    return DecoderStart(tok, (), tok)


def _mbart_token(hub, lang: str) -> int:
    return hub.tgt_dict.index(LANG_TOK_STYLES["mbart"].format(lang))


def _mbart_target(hub, reference: str, target_lang: str):
    """As the task trains on it (append_source_id): the pieces, </s>, the target language's token; the
    decoder starts from that token (the dataset's eos, moved to the front)."""
    import torch

    tgt = hub.tgt_dict.encode_line(hub.apply_bpe(reference), add_if_not_exist=False).long()
    tok = _mbart_token(hub, target_lang)
    return torch.cat([tgt, tgt.new_tensor([tok])]), tok


def _mbart_stripped(hub) -> set[int]:
    """The generator's symbols_to_strip_from_output: its eos, the target language's token."""
    return {_mbart_token(hub, hub.task.args.target_lang)}


@dataclass(frozen=True)
class OriginalFamily:
    """How fairseq runs one family: the hub's options for its release layout, and what its task does
    around the model (what the encoder reads, where the decoder starts, what it is trained on, what
    fairseq-generate strips from a hypothesis' text)."""
    is_release: Callable[[Path], bool]          # a release directory in this family's layout?
    is_hub: Callable[[object], bool]            # a loaded hub of this family?
    model_class: Callable[[], type]             # fairseq's model class whose from_pretrained gives its hub
    release_options: Callable[[Path], dict]
    model_input: Callable
    text_ids: Callable                          # model_input undone: what the hub is given for those ids
    decoder_start: Callable
    teacher_forced_target: Callable
    stripped_symbols: Callable
    hub_forces: Callable = lambda hub: ()       # tokens the hub's generate forces first that its task does not
    encode: Callable = lambda hub, line: hub.encode(line)   # a line as the hub encodes it (its known bugs mended)


# one entry per family porting.format names (tests/test_families.py checks they agree); the first
# whose is_release / is_hub holds is the one
ORIGINALS = {
    MBART: OriginalFamily(
        _is_mbart_release, lambda hub: type(hub.task).__name__ == "TranslationFromPretrainedBARTTask", _mbart_model_class,
        _mbart_release, _multilingual_input, lambda hub, ids: ids[:-1], _mbart_start, _mbart_target,
        _mbart_stripped, encode=_mbart_encode),
    BART: OriginalFamily(
        lambda d: (d / "encoder.json").exists() and (d / "vocab.bpe").exists(),
        lambda hub: str(getattr(hub.cfg.model, "arch", "")).startswith(_bart_archs()), _bart_model_class,
        _bart_release, _bilingual_input, lambda hub, ids: ids, _bart_start, _bart_target,
        lambda hub: {hub.tgt_dict.bos()}, lambda hub: (hub.tgt_dict.bos(),), _bart_encode),
    MULTILINGUAL: OriginalFamily(
        lambda d: not (d / "bpecodes").exists() and any(d.glob("*.model")),
        lambda hub: hasattr(hub.task, "data_manager"), _transformer_model_class,
        _multilingual_release, _multilingual_input, _multilingual_text_ids, _multilingual_start, _multilingual_target,
        _multilingual_stripped),
    BILINGUAL: OriginalFamily(
        lambda d: True, lambda hub: True, _transformer_model_class,
        _bilingual_release, _bilingual_input, lambda hub, ids: ids, _bilingual_start, _bilingual_target,
        _bilingual_stripped),
}


def release_family(model_dir: str | Path) -> str:
    """The family of a release directory: M2M-100's layout (a SentencePiece model, no BPE codes), or wmt19's."""
    return next(name for name, f in ORIGINALS.items() if f.is_release(Path(model_dir)))


def _family(hub) -> OriginalFamily:
    return next(f for f in ORIGINALS.values() if f.is_hub(hub))


def stripped_symbols(hub) -> set[int]:
    """The ids fairseq-generate leaves out of a hypothesis' text besides </s>. The hub's own decode()
    keeps a multilingual task's forced token ("__fr__ Bonjour"); fairseq-generate and fairseq-interactive do not."""
    return _family(hub).stripped_symbols(hub)


def reset_beam(hub, beam: int) -> None:
    """Each model's beamable encoder attention set to this beam. BART's models have it (set_beam_size:
    encoder keys kept once per sentence, einsum over the beam) and fairseq's generator sets it only for
    a beam above 1: after a beam-5 run the attention stays at 5, so a later greedy run, or a teacher-forced
    pass over one sentence, views its keys in fives (a RuntimeError, or wrong keys where the batch divides
    by 5). Set before every generation and forward pass here, so each runs as it would in a fresh process."""
    for model in hub.models:
        if hasattr(model, "set_beam_size"):
            model.set_beam_size(beam)


def encode(hub, line: str):
    """A line's ids as the family's hub encodes it (``hub.encode``, BART's IndexError mended)."""
    return _family(hub).encode(hub, line)


def model_input(hub, tokens):
    """A sentence's ids (``hub.encode``'s: </s> appended) as the encoder reads them: the task's own
    inference dataset puts a multilingual model's language token in (prepended, or in place of </s>)."""
    return _family(hub).model_input(hub, tokens)


def text_ids(hub, ids: list[int]) -> list[int]:
    """The ids to give the hub for a sentence whose encoder input is `ids` (model_input's inverse)."""
    return _family(hub).text_ids(hub, ids)


def decoder_start(hub, target_lang: str) -> DecoderStart:
    """(the decoder's first input token, the tokens fairseq forces as the first generated ones, the token
    its generator ends a hypothesis on)."""
    return DecoderStart(*_family(hub).decoder_start(hub, target_lang))


def teacher_forced_target(hub, reference: str, target_lang: str):
    """(target ids [T] ending with </s>, the decoder's start token) of a reference as fairseq trains on it."""
    return _family(hub).teacher_forced_target(hub, reference, target_lang)


def hypothesis_text(hub, tokens) -> tuple[str, str]:
    """(the pieces string, the text) of a hypothesis as fairseq-generate writes them."""
    pieces = hub.tgt_dict.string(tokens, extra_symbols_to_ignore=stripped_symbols(hub))
    return pieces, hub.detokenize(hub.remove_bpe(pieces))


def generate(hub, tokenized: list, beam: int = 5, **options) -> list[list[dict]]:
    """``hub.generate``: the hub's generator with these options, over the batches the hub forms,
    hypotheses in input order. Written out because fairseq's own passes prefix_allowed_tokens_fn
    to every task's build_generator, and translation_multi_simple_epoch's does not take it (a
    TypeError for every M2M-100 and NLLB model); the steps are the hub's, unchanged, and BARTHubInterface's
    forced <s> is passed as its generate passes it (prefix_tokens)."""
    import copy
    import inspect

    from fairseq import utils
    from omegaconf import open_dict

    gen_args = copy.deepcopy(hub.cfg.generation)
    with open_dict(gen_args):
        gen_args.beam = beam
        for key, value in options.items():
            setattr(gen_args, key, value)
    takes_prefix_fn = "prefix_allowed_tokens_fn" in inspect.signature(hub.task.build_generator).parameters
    generator = hub.task.build_generator(hub.models, gen_args, **({"prefix_allowed_tokens_fn": None}
                                                                   if takes_prefix_fn else {}))
    results = []
    with quiet_fairseq():
        batches = list(hub._build_batches(tokenized, False))
    forced = _family(hub).hub_forces(hub)
    reset_beam(hub, beam)
    for batch in batches:
        batch = utils.apply_to_sample(lambda t: t.to(hub.device), batch)
        src = batch["net_input"]["src_tokens"]
        prefix = src.new_tensor(forced).expand(src.size(0), len(forced)) if forced else None   # [B, len(forced)]
        for i, hypos in zip(batch["id"].tolist(), hub.task.inference_step(generator, hub.models, batch, prefix)):
            results.append((i, hypos))
    return [hypos for _, hypos in sorted(results, key=lambda r: r[0])]


def translate_lines(hub, lines: list[str], chunk_size: int = 50, **generation) -> list[str]:
    """Top hypothesis per line. ``generation`` takes fairseq's generation options (beam, lenpen, ...)."""
    out = []
    for start in range(0, len(lines), chunk_size):
        chunk = [encode(hub, line) for line in lines[start:start + chunk_size]]
        out += [hypothesis_text(hub, hypos[0]["tokens"])[1] for hypos in generate(hub, chunk, **generation)]
    return out
