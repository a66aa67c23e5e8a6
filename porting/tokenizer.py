"""Text <-> ids exactly as fairseq does it, for each family (``TOKENIZERS``; ``open_tokenizer`` picks by the config).

Bilingual models, as fairseq's hub with ``tokenizer='moses', bpe='fastbpe'`` (``Tokenizer``):
  encode: Moses tokenization (sacremoses: escaping on, aggressive dash splits, no punctuation
          normalisation unless asked), BPE applied from the codes, ids from the vocabulary, </s> appended
  decode: ids -> symbols (</s> dropped), "@@ " removed, Moses detokenization in the target language

BPE is applied here rather than through fastBPE: fastBPE is a C++ extension that needs a compiler
to install, and its algorithm is short: split a word into characters (the last one carrying
``</w>``), then repeatedly merge the adjacent pair that comes first in the codes file.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from itertools import zip_longest
from pathlib import Path
from typing import Callable

from sacremoses import MosesDetokenizer, MosesPunctNormalizer, MosesTokenizer

from porting.files import read_lines
from porting.format import (
    BART,
    BILINGUAL,
    BOS,
    BYTE_MERGES_FILE,
    EOS,
    GPT2_ENCODER_FILE,
    LANG_TOK_STYLES,
    MBART,
    MULTILINGUAL,
    SENTENCEPIECE_FILE,
    SHARED_VOCAB_FILE,
    SPECIALS,
    UNK,
    ConfigError,
    DecoderStart,
    LanguageTokens,
    family,
    language_tokens,
    read_config,
)

_SPACE = re.compile(r"\s+")


def from_fsmt_vocab(vocab: dict[str, int]) -> dict[str, int]:
    """FSMT's ``</w>``-marks-the-end style back to fastBPE's ``@@``-marks-a-continuation style."""
    out = {}
    for key, i in vocab.items():
        if key in SPECIALS:
            out[key] = i
        elif key.endswith("</w>"):
            out[key[:-4]] = i
        else:
            out[key + "@@"] = i
    return out


def read_vocab(path: str | Path) -> dict[str, int]:
    """A vocabulary file (JSON: piece -> id), or a ConfigError naming the file and what is wrong."""
    try:
        vocab = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:                      # missing, not UTF-8, not JSON
        raise ConfigError(f"{path}: not readable JSON ({e})") from None
    if not isinstance(vocab, dict) or not all(type(i) is int for i in vocab.values()):
        raise ConfigError(f"{path}: not a JSON object of pieces to ids")
    return vocab


def fairseq_symbols(vocab_file: str | Path) -> list[str]:
    """An FSMT vocabulary file as fairseq's symbols in id order, checked to be fairseq's ids: 0..n-1
    with the four specials first (ConfigError otherwise)."""
    ids = from_fsmt_vocab(read_vocab(vocab_file))
    symbols = [s for s, _ in sorted(ids.items(), key=lambda kv: kv[1])]
    if symbols[:len(SPECIALS)] != list(SPECIALS) or [ids[s] for s in symbols] != list(range(len(symbols))):
        raise ConfigError(f"{vocab_file}: not fairseq's ids 0..n-1 with {', '.join(SPECIALS)} first")
    return symbols


def shared_symbols(model_dir: str | Path) -> list[str]:
    """A multilingual directory's symbols in id order (multilingual_symbols)."""
    model_dir = Path(model_dir)
    vocab = read_vocab(model_dir / SHARED_VOCAB_FILE)
    return multilingual_symbols(vocab, language_tokens(read_config(model_dir)), model_dir)


def multilingual_symbols(vocab: dict[str, int], tokens: LanguageTokens, model_dir: Path) -> list[str]:
    """vocab.json's symbols and the language tokens (their ids in config.json) in id order,
    checked to be 0..n-1 (ConfigError otherwise)."""
    ids = {**vocab, **{tokens.token(lang): i for lang, i in tokens.ids.items()}}
    symbols = [s for s, _ in sorted(ids.items(), key=lambda kv: kv[1])]
    if [ids[s] for s in symbols] != list(range(len(symbols))):
        raise ConfigError(f"{model_dir}: {SHARED_VOCAB_FILE} and the language tokens are not ids 0..n-1")
    return symbols


def read_codes(path: str | Path) -> dict[tuple[str, str], int]:
    """merges.txt or fastBPE's bpecodes: ``left right [count]`` per line -> rank (line order)."""
    ranks = {}
    for line in read_lines(path):
        parts = line.split()
        if len(parts) >= 2 and not line.startswith("#version"):
            ranks.setdefault((parts[0], parts[1]), len(ranks))
    return ranks


class BPE:
    def __init__(self, ranks: dict[tuple[str, str], int]):
        self.ranks = ranks
        self.segment = lru_cache(maxsize=1 << 16)(self._segment)

    def _segment(self, word: str) -> tuple[str, ...]:
        symbols = list(word[:-1]) + [word[-1] + "</w>"]
        while len(symbols) > 1:
            pairs = [(self.ranks.get((a, b)), i) for i, (a, b) in enumerate(zip(symbols, symbols[1:]))]
            best = min((r for r, _ in pairs if r is not None), default=None)
            if best is None:
                break
            left, right = next((symbols[i], symbols[i + 1]) for r, i in pairs if r == best)
            merged, i = [], 0
            while i < len(symbols):
                if i < len(symbols) - 1 and symbols[i] == left and symbols[i + 1] == right:
                    merged.append(left + right)
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            symbols = merged
        return tuple(symbols)

    def apply(self, text: str) -> str:
        """Space-separated tokens -> space-separated pieces, non-final pieces marked with ``@@``."""
        pieces = []
        for word in text.split(" "):
            if not word:
                continue
            segs = self.segment(word)
            pieces += [s + "@@" for s in segs[:-1]] + [segs[-1][:-4] if segs[-1].endswith("</w>") else segs[-1]]
        return " ".join(pieces)

    @staticmethod
    def remove(text: str) -> str:
        return (text + " ").replace("@@ ", "").rstrip()  # fairseq's fastbpe decode


def vocabulary_difference(a: str | Path, b: str | Path) -> str | None:
    """Where two converted directories' vocabularies part (the first differing id per side), or
    None when they are the same: ensemble members must agree on every id, not only on the sizes."""
    for side, x, y in zip(("source", "target"), vocabularies(a), vocabularies(b)):
        for i, (s, t) in enumerate(zip_longest(x, y)):
            if s != t:
                return f"the {side} vocabularies differ first at id {i}: {s!r} in {a}, {t!r} in {b}"
    return None


def read_byte_merges(path: str | Path) -> list[tuple[str, str]]:
    return parse_byte_merges(Path(path).read_text(encoding="utf-8"))


def parse_byte_merges(text: str) -> list[tuple[str, str]]:
    """GPT-2's vocab.bpe (BartTokenizer's merges.txt) as fairseq and transformers read it: the first line is
    the "#version" header, and the last is dropped too (the empty string after the final newline)."""
    return [tuple(line.split()) for line in text.split("\n")[1:-1]]


@lru_cache(maxsize=1)
def gpt2_byte_symbols() -> dict[int, str]:
    """GPT-2's table of one printable character per byte (its ``bytes_to_unicode``): printable Latin-1
    bytes stand for themselves, the other 68 are numbered on from U+0100 in byte order. Part of the
    format's definition (encoder.json and vocab.bpe are written in these characters), so it is
    spelled out here; it must match GPT-2's and fairseq's (gpt2_bpe_utils.bytes_to_unicode)."""
    kept = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in kept]
    return {**{b: chr(b) for b in kept}, **{b: chr(256 + n) for n, b in enumerate(others)}}


class ByteLevelBPE:
    """GPT-2's byte-level BPE as fairseq applies it (``--bpe gpt2``, gpt2_bpe_utils.Encoder): the text
    cut by GPT-2's regex (with the ``regex`` package, as fairseq, so that Unicode's letter and number
    classes are the same version's), each piece's UTF-8 bytes spelled with gpt2_byte_symbols, merged by
    the BPE model of ``encoder.json`` + ``vocab.bpe`` (the ``tokenizers`` library's BPE: its merges give
    GPT-2's ids, fuzzed against fairseq's in tests/test_byte_bpe.py), giving GPT-2 ids.
    decode: the ids' symbols joined, back to bytes, UTF-8 with invalid sequences replaced (fairseq's
    errors="replace")."""
    # must match fairseq's (gpt2_bpe_utils.Encoder.pat): contractions, letters, digits, other
    # symbols, each optionally after one space; runs of whitespace not followed by a non-space
    PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

    def __init__(self, vocab: dict[str, int], merges: list[tuple[str, str]]):
        import regex
        from tokenizers.models import BPE as BPEModel

        self.model = BPEModel(vocab, merges)
        self.pattern = regex.compile(self.PATTERN)
        self.byte_symbols = gpt2_byte_symbols()
        self.symbol_bytes = {c: b for b, c in self.byte_symbols.items()}
        self.symbols = {i: s for s, i in vocab.items()}
        self.cache: dict[str, list[int]] = {}

    @classmethod
    def from_files(cls, encoder_json: str | Path, vocab_bpe: str | Path) -> "ByteLevelBPE":
        """GPT-2's files: encoder.json (piece -> GPT-2 id) and vocab.bpe (the merges)."""
        return cls(json.loads(Path(encoder_json).read_text(encoding="utf-8")), read_byte_merges(vocab_bpe))

    def _word(self, piece: str) -> list[int]:
        if piece not in self.cache:
            spelled = "".join(self.byte_symbols[b] for b in piece.encode("utf-8"))
            self.cache[piece] = [t.id for t in self.model.tokenize(spelled)]
        return self.cache[piece]

    def encode(self, text: str) -> list[int]:
        """GPT-2 ids of the text."""
        return [i for piece in self.pattern.findall(text) for i in self._word(piece)]

    def decode(self, ids: list[int]) -> str:
        spelled = "".join(self.symbols[i] for i in ids)
        # a symbol outside GPT-2's byte table (a dictionary's own, "madeupword0000") stands for its UTF-8
        data = b"".join(bytes([self.symbol_bytes[c]]) if c in self.symbol_bytes else c.encode("utf-8") for c in spelled)
        return data.decode("utf-8", errors="replace")


MIN_PIECE_SHARE = 0.95   # the shipped model's dictionary holds 7,996 of its 7,997 SentencePiece pieces


@dataclass(frozen=True)
class PieceFit:
    share: float
    checked: int
    examples: tuple[str, ...]

    def problem(self, sentencepiece: str, dictionary: str) -> str | None:
        """Why a SentencePiece model and a dictionary are no pair (the converter refuses them, the
        port refuses to load them), or None."""
        if self.share >= MIN_PIECE_SHARE:
            return None
        return (f"{sentencepiece} fits {dictionary} poorly: the dictionary holds only {self.share:.1%} of its "
                f"{self.checked} pieces (missing e.g. {', '.join(self.examples)}); every missing piece would become "
                "<unk>. The SentencePiece model may belong to another model.")


def piece_fit(sp, symbols) -> PieceFit:
    """The share of a SentencePiece model's pieces (control pieces aside) among the symbols: a piece
    the dictionary lacks becomes <unk> in every sentence that uses it."""
    pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size()) if not (sp.is_control(i) or sp.is_unknown(i))]
    missing = [p for p in pieces if p not in symbols]
    return PieceFit(1 - len(missing) / max(len(pieces), 1), len(pieces), tuple(missing[:5]))


class DirectionError(ConfigError):
    """A direction the model cannot be asked for (a missing or unknown language): a user's mistake."""


class Tokenizer:
    """The bilingual family: Moses + fastBPE. The decoder starts from </s> and nothing is forced."""
    bos, prefix, end = EOS, (), EOS          # the decoder's start, the tokens forced first, the search's end
    tail = 1                                 # the ids encode() puts last (</s>), kept where a source is cut

    def __init__(self, model_dir: str | Path, normalize_punctuation: bool = False):
        model_dir = Path(model_dir)
        config = read_config(model_dir)
        self.source_lang, self.target_lang = config["langs"]
        self.src_vocab = from_fsmt_vocab(read_vocab(model_dir / "vocab-src.json"))
        tgt = from_fsmt_vocab(read_vocab(model_dir / "vocab-tgt.json"))
        self.tgt_symbols = {i: s for s, i in tgt.items()}
        self.bpe = BPE(read_codes(model_dir / "merges.txt"))
        self.moses = MosesTokenizer(self.source_lang)
        self.detok = MosesDetokenizer(self.target_lang)
        self.normalizer = MosesPunctNormalizer(lang=self.source_lang) if normalize_punctuation else None

    def moses_tokens(self, line: str) -> str:
        if self.normalizer is not None:
            line = self.normalizer.normalize(line)
        return self.moses.tokenize(line, aggressive_dash_splits=True, return_str=True, escape=True)

    def encode_pieces(self, line: str) -> str:
        return self.bpe.apply(self.moses_tokens(line))

    def encode(self, line: str) -> list[int]:
        """Source ids, </s> appended (fairseq's ``encode_line``: unknown pieces become <unk>)."""
        pieces = _SPACE.sub(" ", self.encode_pieces(line)).strip().split()
        return [self.src_vocab.get(p, UNK) for p in pieces] + [EOS]

    def symbols(self, ids: list[int]) -> str:
        """fairseq's ``Dictionary.string``: </s> dropped, <unk> kept as its symbol."""
        return " ".join(self.tgt_symbols.get(i, "<unk>") for i in ids if i != EOS)

    def decode(self, ids: list[int]) -> str:
        return self.detok.detokenize(BPE.remove(self.symbols(ids)).split())


_SPM_SPACE = "\u2581"


class SentencePieceTokenizer:
    """The multilingual family (M2M-100, NLLB-200), as fairseq's ``--bpe sentencepiece`` with no
    pre-tokenizer, for one direction:

      encode: the ``sentencepiece`` library's own encoder (not a re-implementation), each piece
              looked up in the shared dictionary (a piece it lacks becomes <unk>, as fairseq's
              ``encode_line``), </s> appended, then the language token where the model's task puts
              it (porting.format.LanguageTokens)
      decode: fairseq's ``Dictionary.string`` (</s> and the forced target-language token left out,
              as fairseq-generate strips them; <unk> kept as its symbol), then its sentencepiece
              post-processing: spaces removed, ``▁`` made a space, stripped
    """

    tail = 1                                 # </s>, or the language token in its place

    def __init__(self, model_dir: str | Path, source_lang: str | None, target_lang: str | None):
        import sentencepiece

        model_dir = Path(model_dir)
        self.tokens = language_tokens(read_config(model_dir))
        if problems := self.tokens.direction_problems(source_lang, target_lang):
            raise DirectionError("; ".join(problems))
        self.source_lang, self.target_lang = source_lang, target_lang
        self.vocab = read_vocab(model_dir / SHARED_VOCAB_FILE)
        self.id_symbols = dict(enumerate(multilingual_symbols(self.vocab, self.tokens, model_dir)))
        self.sp = sentencepiece.SentencePieceProcessor(model_file=str(model_dir / SENTENCEPIECE_FILE))
        # what the converter checked: a swapped SentencePiece model would turn text into <unk>s silently
        if problem := piece_fit(self.sp, self.vocab).problem(SENTENCEPIECE_FILE, SHARED_VOCAB_FILE):
            raise ConfigError(f"{model_dir}: {problem}")
        self.bos, self.prefix = self.tokens.decoder_start(target_lang)
        self.end = EOS
        self.stripped = {EOS, *self.prefix}

    def moses_tokens(self, line: str) -> str:
        """No pre-tokenizer: fairseq's --tokenizer stage is the identity for these models."""
        return line

    def encode_pieces(self, line: str) -> str:
        return " ".join(self.sp.encode(line, out_type=str))

    def encode(self, line: str) -> list[int]:
        """What the encoder reads: piece ids, </s>, and the language token in its place."""
        pieces = self.encode_pieces(line).split()
        ids = [self.vocab.get(p, UNK) for p in pieces] + [EOS]
        return self.tokens.source_ids(ids, self.source_lang, self.target_lang)

    def symbols(self, ids: list[int]) -> str:
        return " ".join(self.id_symbols.get(i, "<unk>") for i in ids if i not in self.stripped)

    def decode(self, ids: list[int]) -> str:
        return self.symbols(ids).replace(" ", "").replace(_SPM_SPACE, " ").strip()


class ByteLevelTokenizer:
    """The BART family, as fairseq's BART hub interface (``--bpe gpt2``; BARTHubInterface):

      encode: GPT-2's byte-level BPE (ByteLevelBPE), each piece looked up at fairseq's id (vocab.json;
              a piece fairseq's dictionary lacks becomes <unk>, as fairseq-generate's encode_line
              makes it), cut to the model's positions less two, then ``<s> … </s>`` around it (the hub's encode)
      start:  the decoder starts from </s> and ``<s>`` is forced as the first generated token (the
              hub's generate passes it as prefix_tokens)
      decode: fairseq's ``Dictionary.string`` (<s> and </s> left out wherever they are, <unk> kept as its
              symbol), then GPT-2's decode: the pieces' bytes joined, UTF-8 with invalid sequences replaced

    fairseq's symbols are GPT-2's ids written as decimal strings; encoder.json names them (``symbols``)."""
    bos, prefix, end = EOS, (BOS,), EOS
    tail = 1

    def __init__(self, model_dir: str | Path, config: dict):
        model_dir = Path(model_dir)
        self.source_lang, self.target_lang = config["langs"]
        self.vocab = read_vocab(model_dir / SHARED_VOCAB_FILE)
        merges = read_byte_merges(model_dir / BYTE_MERGES_FILE)
        self.id_symbols = dict(enumerate(symbols_of_pieces(self.vocab, read_vocab(model_dir / GPT2_ENCODER_FILE),
                                                           f"{model_dir}/{SHARED_VOCAB_FILE}")))
        # the BPE needs every merge's result in its vocabulary: pieces fairseq's dictionary lacks get ids
        # past it, which encode() makes <unk> (what fairseq's dictionary lookup does with them)
        placeholders = [p for p in dict.fromkeys([*gpt2_byte_symbols().values(), *("".join(m) for m in merges)])
                        if p not in self.vocab]
        past = len(self.id_symbols)
        self.bpe = ByteLevelBPE({**self.vocab, **{p: past + k for k, p in enumerate(placeholders)}}, merges)
        self.known = past
        arch = config["porting"]["architecture"]
        # the hub's encode: min(max_positions) - 2, room for <s> and </s>
        self.cap = min(arch["max_source_positions"], arch["max_target_positions"]) - 2
        self.stripped = {EOS, BOS}

    def moses_tokens(self, line: str) -> str:
        """No pre-tokenizer: GPT-2's regex is part of the BPE."""
        return line

    def encode_pieces(self, line: str) -> str:
        """fairseq's symbols of the line (GPT-2 ids as decimal strings), as ``hub.apply_bpe`` writes them."""
        return " ".join(self.id_symbols.get(i, "<unk>") for i in self._text_ids(line))

    def _text_ids(self, line: str) -> list[int]:
        return [i if i < self.known else UNK for i in self.bpe.encode(line)]

    def encode(self, line: str) -> list[int]:
        return [BOS, *self._text_ids(line)[:self.cap], EOS]

    def symbols(self, ids: list[int]) -> str:
        return " ".join(self.id_symbols.get(i, "<unk>") for i in ids if i not in self.stripped)

    def decode(self, ids: list[int]) -> str:
        # the BPE's symbols are vocab.json's pieces at fairseq's ids: GPT-2's decode, on fairseq's ids
        return self.bpe.decode([i if i in self.bpe.symbols else UNK for i in ids if i not in self.stripped])


class LanguageCodeTokenizer:
    """The mBART family, as fairseq-generate runs ``--task translation_from_pretrained_bart`` with
    ``--bpe sentencepiece`` (mBART's README), in the one direction the model was fine-tuned for:

      encode: the ``sentencepiece`` library's own encoder, each piece looked up in the dictionary by its
              string (vocab.json; a piece it lacks becomes <unk>), </s>, then the source language's
              ``[xx_YY]`` token (the task's append_source_id)
      start:  the decoder starts from the target language's token, the generator's eos; nothing is forced
      end:    the search ends on that token too: </s> is an ordinary token (porting/NOTES.md)
      decode: fairseq's ``Dictionary.string`` (</s>, <s> and the target language's token left out wherever
              they are, <unk> kept as its symbol), then sentencepiece's post-processing: spaces removed,
              ``▁`` made a space, stripped
    """
    prefix = ()
    tail = 2                                 # </s> and the source language's token

    def __init__(self, model_dir: str | Path, config: dict):
        import sentencepiece

        model_dir = Path(model_dir)
        self.source_lang, self.target_lang = config["langs"]
        self.vocab = read_vocab(model_dir / SHARED_VOCAB_FILE)
        self.id_symbols = dict(enumerate(vocabulary_symbols(self.vocab, f"{model_dir}/{SHARED_VOCAB_FILE}")))
        self.sp = sentencepiece.SentencePieceProcessor(model_file=str(model_dir / SENTENCEPIECE_FILE))
        if problem := piece_fit(self.sp, self.vocab).problem(SENTENCEPIECE_FILE, SHARED_VOCAB_FILE):
            raise ConfigError(f"{model_dir}: {problem}")
        src, tgt = (LANG_TOK_STYLES["mbart"].format(lang) for lang in config["langs"])
        if missing := [t for t in (src, tgt) if t not in self.vocab]:
            raise ConfigError(f"{model_dir}: {SHARED_VOCAB_FILE} lacks {', '.join(missing)} (the task's language tokens)")
        self.source_token, self.bos = self.vocab[src], self.vocab[tgt]
        self.end = self.bos
        self.stripped = {EOS, BOS, self.end}

    def moses_tokens(self, line: str) -> str:
        """No pre-tokenizer: fairseq's --tokenizer stage is the identity for these models."""
        return line

    def encode_pieces(self, line: str) -> str:
        return " ".join(self.sp.encode(line, out_type=str))

    def encode(self, line: str) -> list[int]:
        return [*(self.vocab.get(p, UNK) for p in self.encode_pieces(line).split()), EOS, self.source_token]

    def symbols(self, ids: list[int]) -> str:
        return " ".join(self.id_symbols.get(i, "<unk>") for i in ids if i not in self.stripped)

    def decode(self, ids: list[int]) -> str:
        return self.symbols(ids).replace(" ", "").replace(_SPM_SPACE, " ").strip()


def vocabulary_symbols(vocab: dict[str, int], label: str) -> list[str]:
    """A vocab.json holding every symbol as fairseq's symbols in id order, checked to be ids 0..n-1 with
    the specials first (ConfigError otherwise)."""
    by_id = sorted(vocab.items(), key=lambda kv: kv[1])
    if [i for _, i in by_id] != list(range(len(by_id))) or [p for p, _ in by_id[:len(SPECIALS)]] != list(SPECIALS):
        raise ConfigError(f"{label}: not fairseq's ids 0..n-1 with {', '.join(SPECIALS)} first")
    return [p for p, _ in by_id]


def byte_level_symbols(model_dir: str | Path) -> list[str]:
    """A BART directory's fairseq symbols in id order (symbols_of_pieces on its vocab.json and encoder.json)."""
    model_dir = Path(model_dir)
    return symbols_of_pieces(read_vocab(model_dir / SHARED_VOCAB_FILE), read_vocab(model_dir / GPT2_ENCODER_FILE),
                             f"{model_dir}/{SHARED_VOCAB_FILE}")


def symbols_of_pieces(vocab: dict[str, int], gpt2: dict[str, int], label: str) -> list[str]:
    """fairseq's symbols in id order from byte-level pieces at fairseq's ids: each GPT-2 piece named by its
    GPT-2 id (encoder.json), the others (specials, <mask>) by themselves; checked to be ids 0..n-1 with
    the specials first (ConfigError otherwise)."""
    return [p if p in SPECIALS or p not in gpt2 else str(gpt2[p]) for p in vocabulary_symbols(vocab, label)]


def _own_direction(model_dir: str | Path, config: dict, source_lang: str | None, target_lang: str | None) -> None:
    """A bilingual (or BART) model has one direction: languages given must be its own."""
    own = tuple(config["langs"])
    for flag, given, lang in (("--source-lang", source_lang, own[0]), ("--target-lang", target_lang, own[1])):
        if given and given != lang:
            raise DirectionError(f"{flag} {given}: {model_dir} translates {own[0]} to {own[1]} only")


def _open_bilingual(model_dir: str | Path, config: dict, normalize_punctuation: bool, source_lang: str | None,
                    target_lang: str | None) -> Tokenizer:
    _own_direction(model_dir, config, source_lang, target_lang)
    return Tokenizer(model_dir, normalize_punctuation)


def _open_multilingual(model_dir: str | Path, config: dict, normalize_punctuation: bool, source_lang: str | None,
                       target_lang: str | None) -> SentencePieceTokenizer:
    _no_moses_normaliser(normalize_punctuation, "a SentencePiece model normalises its input itself")
    return SentencePieceTokenizer(model_dir, source_lang, target_lang)


def _open_byte_level(model_dir: str | Path, config: dict, normalize_punctuation: bool, source_lang: str | None,
                     target_lang: str | None) -> ByteLevelTokenizer:
    _no_moses_normaliser(normalize_punctuation, "GPT-2's byte-level BPE takes text as it is")
    _own_direction(model_dir, config, source_lang, target_lang)
    return ByteLevelTokenizer(model_dir, config)


def _open_language_code(model_dir: str | Path, config: dict, normalize_punctuation: bool, source_lang: str | None,
                        target_lang: str | None) -> LanguageCodeTokenizer:
    _no_moses_normaliser(normalize_punctuation, "a SentencePiece model normalises its input itself")
    _own_direction(model_dir, config, source_lang, target_lang)
    return LanguageCodeTokenizer(model_dir, config)


def _no_moses_normaliser(asked: bool, why: str) -> None:
    """--normalize-punctuation is for the Moses families only: refused by name elsewhere."""
    if asked:
        raise DirectionError(f"--normalize-punctuation is Moses' normaliser, for the bilingual Moses + BPE models; {why}")


def _bilingual_symbols(model_dir: Path) -> tuple[list[str], list[str]]:
    return fairseq_symbols(model_dir / "vocab-src.json"), fairseq_symbols(model_dir / "vocab-tgt.json")


def _shared_symbols(model_dir: Path) -> tuple[list[str], list[str]]:
    shared = shared_symbols(model_dir)
    return shared, shared


def _byte_level_symbols(model_dir: Path) -> tuple[list[str], list[str]]:
    shared = byte_level_symbols(model_dir)
    return shared, shared


def _vocabulary_symbols(model_dir: Path) -> tuple[list[str], list[str]]:
    path = model_dir / SHARED_VOCAB_FILE
    shared = vocabulary_symbols(read_vocab(path), str(path))
    return shared, shared


AnyTokenizer = Tokenizer | SentencePieceTokenizer | ByteLevelTokenizer | LanguageCodeTokenizer


@dataclass(frozen=True)
class TokenizerFamily:
    """A family's side of the native runtime: its tokenizer, and its symbols in id order."""
    # (model_dir, config, normalize_punctuation, src, tgt) -> the family's tokenizer
    open: Callable[..., AnyTokenizer]
    symbols: Callable[[Path], tuple[list[str], list[str]]]     # model_dir -> (source, target) symbols by id


# one entry per family porting.format names (tests/test_families.py checks they agree)
TOKENIZERS = {
    BILINGUAL: TokenizerFamily(_open_bilingual, _bilingual_symbols),
    MULTILINGUAL: TokenizerFamily(_open_multilingual, _shared_symbols),
    BART: TokenizerFamily(_open_byte_level, _byte_level_symbols),
    MBART: TokenizerFamily(_open_language_code, _vocabulary_symbols),
}


def decoder_start(tokenizer: AnyTokenizer) -> DecoderStart:
    """Where a tokenizer's family starts the decoder and ends the search (porting.format.DecoderStart)."""
    return DecoderStart(tokenizer.bos, tokenizer.prefix, tokenizer.end)


def open_tokenizer(model_dir: str | Path, normalize_punctuation: bool = False, source_lang: str | None = None,
                   target_lang: str | None = None) -> AnyTokenizer:
    """The tokenizer of a converted directory's family, for the direction asked."""
    config = read_config(model_dir)
    return TOKENIZERS[family(config)].open(model_dir, config, normalize_punctuation, source_lang, target_lang)


def vocabularies(model_dir: str | Path) -> tuple[list[str], list[str]]:
    """(source, target): a converted directory's symbols in fairseq's id order (one list twice where
    the family shares one dictionary), checked to be fairseq's ids."""
    return TOKENIZERS[family(read_config(model_dir))].symbols(Path(model_dir))
