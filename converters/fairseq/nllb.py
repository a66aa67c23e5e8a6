"""transformers' NllbTokenizer for a multilingual model whose language codes are NLLB-200's
(``eng_Latn``: ISO 639-3, an underscore, ISO 15924).

transformers >= 5 builds NllbTokenizer as a `tokenizers` BPE model from a vocabulary and merges,
with SentencePiece's normaliser (its precompiled character map) and the ``▁`` pre-tokenizer; its
language tokens are the bare codes, special tokens of the vocabulary, put first in the source
(``legacy_behaviour=False``, fairseq's ``--encoder-langtok src``). So the converter writes
``tokenizer.json`` with:
  * the vocabulary: the fairseq dictionary's symbols at their fairseq ids (not SentencePiece's:
    the model's embedding rows follow the dictionary), fairseq's ``__eng_Latn__`` renamed
    ``eng_Latn`` at the same id;
  * the merges: SentencePiece's BPE merges in its own order (transformers' SentencePieceExtractor
    derives them; a merge's rank is what decides a segmentation, not the ids).
Two kinds of model cannot be written this way and are flagged instead (the native port runs both):
a unigram SentencePiece model (a BPE cannot reproduce its segmentation), and pieces the dictionary
lacks (fairseq makes them ``<unk>``; a BPE without them would stop at their parts).
"""
from __future__ import annotations

import re
import tempfile
from pathlib import Path

from porting.format import LanguageTokens

NLLB_CODE = re.compile(r"[a-z]{3}_[A-Z][a-z]{3}")
BPE_MODEL_TYPE = 2                 # sentencepiece_model.proto TrainerSpec.ModelType: UNIGRAM=1, BPE=2
NLLB_FILES = ("tokenizer.json", "tokenizer_config.json")   # what save_pretrained writes


def nllb_coded(tokens: LanguageTokens) -> bool:
    """Whether the model's language codes are NLLB-200's (then its tokenizer is NllbTokenizer)."""
    return all(NLLB_CODE.fullmatch(lang) for lang in tokens.langs)


def tokenizer_problems(sentencepiece: Path, symbols: list[str], tokens: LanguageTokens) -> list[str]:
    """Why NllbTokenizer cannot reproduce fairseq's ids for this SentencePiece model and dictionary."""
    known = set(symbols)
    if taken := [lang for lang in tokens.langs if lang in known]:
        return [f"tokenizer: the dictionary holds {', '.join(taken)} as text: NllbTokenizer's language tokens "
                "are the bare codes, which would then name two symbols"]
    try:
        from transformers.convert_slow_tokenizer import SentencePieceExtractor
    except ImportError:
        return ["tokenizer: transformers is not installed here, so NllbTokenizer's files could not be written"]
    try:
        proto = SentencePieceExtractor(str(sentencepiece)).proto
    except ImportError as e:                         # protobuf (transformers' requirement for this) missing
        return [f"tokenizer: NllbTokenizer's files need {e.name or 'protobuf'} installed to read the SentencePiece model"]
    if proto.trainer_spec.model_type != BPE_MODEL_TYPE:
        return ["tokenizer: the SentencePiece model is not BPE; transformers' NllbTokenizer is a BPE model "
                "and cannot reproduce another model type's segmentation"]
    missing = [p.piece for p in proto.pieces if p.type == 1 and p.piece not in known]   # 1: NORMAL pieces
    if missing:
        return [f"tokenizer: {len(missing)} of the SentencePiece model's pieces are not in the dictionary "
                f"(e.g. {', '.join(missing[:5])}): fairseq makes them <unk>, NllbTokenizer's BPE would split them"]
    return []


def tokenizer_files(sentencepiece: Path, symbols: list[str], tokens: LanguageTokens,
                    max_positions: int) -> dict[str, str]:
    """NllbTokenizer's files (tokenizer.json, tokenizer_config.json), as transformers' save_pretrained
    writes them; call only where tokenizer_problems is empty."""
    from tokenizers.models import BPE
    from transformers import NllbTokenizer
    from transformers.convert_slow_tokenizer import SentencePieceExtractor

    extracted = SentencePieceExtractor(str(sentencepiece)).extract(BPE)
    renamed = {tokens.token(lang): lang for lang in tokens.langs}        # __eng_Latn__ -> eng_Latn
    vocab = {renamed.get(s, s): i for i, s in enumerate(symbols)}
    src, tgt = tokens.default_direction()
    made = NllbTokenizer(vocab=vocab, merges=extracted["merges"],
                         _spm_precompiled_charsmap=extracted["_spm_precompiled_charsmap"],
                         extra_special_tokens=list(tokens.langs), src_lang=src, tgt_lang=tgt,
                         legacy_behaviour=False, model_max_length=max_positions)
    with tempfile.TemporaryDirectory() as tmp:
        made.save_pretrained(tmp)
        return {name: (Path(tmp) / name).read_text(encoding="utf-8") for name in NLLB_FILES}
