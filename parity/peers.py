"""The peers users deploy, as systems the harness can put under test (the contract: parity/systems.py).

- transformers' FSMT: its own tokenizer, its layers' outputs through forward hooks at the boundaries
  parity/names.py declares (FSMT keeps fairseq's module names under ``model.``), teacher-forced
  log-probs from one forward pass, generation through ``generate()``;
- CTranslate2: the tokenizer its export carries, no tensors (its C++ layers expose none), log-probs
  from ``score_batch``, generation through ``translate_batch`` with the family's target prefix.

fairseq's options are mapped to each system's own names; what a system cannot express is listed, and
the closest mapping is used, never silently replaced.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from parity import names
from parity.contract import Hyp, Mapping, UnusableSystem, require, tokenizer_stages
from porting.format import EOS, PAD, UNK, DecoderStart


def _not_expressible(options: dict, system: str) -> list[str]:
    out = ["fairseq's stopping rule (a sentence ends once `beam` hypotheses have ended, the first ones kept): "
           f"{system}'s own rule is used"] if options.get("beam", 5) > 1 else []
    if options.get("unkpen"):
        out.append(f"unkpen={options['unkpen']}: {system} has no <unk> penalty; none is applied")
    if options.get("no_repeat_ngram_size"):
        out.append(f"no_repeat_ngram_size={options['no_repeat_ngram_size']}: {system} blocks repeats correctly, "
                   "fairseq with its known bug (porting/NOTES.md)")
    return out


def _fsmt_pieces(pieces: list[str]) -> list[str]:
    """FSMT's pieces (``</w>`` ends a word) in fastBPE's style (``@@`` continues one), as recorded."""
    return [p[:-4] if p.endswith("</w>") else p + "@@" for p in pieces]


TRANSFORMERS_DTYPES = ("float32", "float16", "bfloat16")


def transformers_system(model_dir: Path, langs: tuple[str, str] | None = None, dtype: str = "float32"):
    """The transformers adapter for a directory's model_type: FSMT (the bilingual family) or M2M100
    (the multilingual one, with M2M100Tokenizer or, for NLLB codes, NllbTokenizer), Bart or MBart.
    dtype: the model cast to float16 or bfloat16, an approximate port held to that type's budget."""
    if dtype not in TRANSFORMERS_DTYPES:
        raise UnusableSystem(f"transformers:{model_dir}: --dtype {dtype!r}: choose one of {', '.join(TRANSFORMERS_DTYPES)}")
    require("transformers", f"transformers:{model_dir}")
    config_file = Path(model_dir) / "config.json"
    if not config_file.is_file():
        raise UnusableSystem(f"transformers:{model_dir}: no config.json: not a transformers model directory")
    try:
        model_type = json.loads(config_file.read_text(encoding="utf-8")).get("model_type")
    except (ValueError, AttributeError):
        raise UnusableSystem(f"transformers:{model_dir}: config.json is not a JSON object") from None
    if not isinstance(model_type, str) or model_type not in TRANSFORMERS_ADAPTERS:
        raise UnusableSystem(f"transformers:{model_dir}: a {model_type!r} model; the harness runs "
                             f"{', '.join(repr(k) for k in TRANSFORMERS_ADAPTERS)} (FSMT, M2M100, Bart and MBart)")
    system = TRANSFORMERS_ADAPTERS[model_type](Path(model_dir), langs)
    if dtype != "float32":
        system.model.to(getattr(torch, dtype))
        system.approximation = dtype
    return system


def _one_direction(model_dir: Path, own, asked: tuple[str, str] | None) -> tuple[str, str]:
    """A one-direction model's (source, target); a direction asked for must be that one."""
    own = tuple(own)
    if asked and tuple(asked) != own:
        raise UnusableSystem(f"transformers:{model_dir}: translates {own[0]} to {own[1]} only, "
                             f"not {asked[0]} to {asked[1]}")
    return own


def _quiet_transformers() -> None:
    """Quiet, as every command is: its warnings here are the tie advice that is wrong for separate
    dictionaries (porting/NOTES.md) and flags greedy search ignores; the report lists the mapping."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()


class TransformersSystem:
    """What the transformers adapters share: generate() with fairseq's options mapped, teacher-forced
    log-probs from one forward pass, layer outputs through hooks at the boundaries parity/names.py
    declares (both classes keep fairseq's module names under ``model.``)."""
    kind = "transformers"
    search_rules = ("transformers' beam search: early_stopping=True ends a sentence once `num_beams` hypotheses "
                    "have ended and keeps the best ones, fairseq keeps the first ones found")
    scores_forced = False        # generate()'s scores count forced tokens as 0
    shadows = False              # its layers take no tensors from outside
    approximation = None         # float32, as converted; transformers_system(dtype=...) sets it
    time_major = True            # whether its layers pass [T, B, C] (fairseq's, FSMT's) or [B, T, C] (M2M100's)
    model: torch.nn.Module
    start: DecoderStart

    def boundary_table(self) -> list:
        m = self.model.model
        return names.boundaries(len(m.encoder.layers), len(m.decoder.layers),
                                getattr(m.encoder, "layer_norm", None) is not None,
                                getattr(m.decoder, "layer_norm", None) is not None)

    def mapping(self, options: dict, cap: int | None = None) -> Mapping:
        """fairseq's options in generate()'s terms, by the one mapping the model card and
        generation_config.json use (converters.fairseq.card.transformers_generation), with the batch's
        cap as max_len_b and the target-language token forced."""
        from converters.fairseq.card import transformers_generation
        from porting.generation.options import fairseq_defaults

        full = {**fairseq_defaults(), **options, **({"max_len_b": cap, "max_len_a": 0.0} if cap is not None else {})}
        settings = {"num_return_sequences": 1, "do_sample": False, **transformers_generation(full)["settings"],
                    **({"forced_bos_token_id": self.start[1][0]} if self.start[1] else {})}
        return Mapping(settings, _not_expressible(options, "transformers"))

    def boundaries(self, src: torch.Tensor, prev: torch.Tensor, replace=None) -> dict[str, torch.Tensor]:
        if replace is not None:
            raise UnusableSystem("shadow mode feeds the original's tensors into the port's layers: the native port only")
        model = self.model
        seen, handles = {}, []

        def as_rows(x):
            return x[:, 0] if self.time_major else x[0]                        # [T, 1, C] or [1, T, C] -> [T, C]
        for b in self.boundary_table():
            if not b.fairseq_module:
                continue
            module = model.get_submodule(names.FSMT_PREFIX + b.fairseq_module)

            def grab_input(_module, args, kwargs, name=b.name):
                seen[name] = as_rows(args[0] if args else kwargs["hidden_states"]).detach()

            def grab_output(_module, _args, output, name=b.name):
                seen[name] = as_rows(output[0] if isinstance(output, tuple) else output).detach()
            handles.append(module.register_forward_pre_hook(grab_input, with_kwargs=True) if b.taken_from == "input"
                           else module.register_forward_hook(grab_output))
        try:
            with torch.no_grad():
                logits = model(input_ids=src[None], decoder_input_ids=prev[None], use_cache=False).logits
        finally:
            for h in handles:
                h.remove()
        seen["decoder.logits"] = logits[0]
        seen["decoder.lprobs"] = torch.log_softmax(logits[0].float(), -1)
        return seen

    def generate(self, batch: list[list[int]], options: dict, cap: int | None = None) -> list[list[list[int]]]:
        """Each line's n-best as ids (no scores: the benchmark times this)."""
        m = self.mapping(options, cap).settings
        width = max(map(len, batch))
        ids = torch.tensor([x + [PAD] * (width - len(x)) for x in batch])       # right-padded, as transformers expects
        with torch.inference_mode():
            out = self.model.generate(ids, attention_mask=ids.ne(PAD), **m).tolist()
        hyps, end = [], self.start.end
        for row in out:
            row = row[1:]                                                       # the decoder's start token
            hyps.append(row[: row.index(end) + 1] if end in row else row + [end])  # at the cap: fairseq's forced end
        n = m["num_return_sequences"]
        return [hyps[i:i + n] for i in range(0, len(hyps), n)]

    def translate(self, batch: list[list[int]], options: dict, cap: int | None = None) -> list[list[Hyp]]:
        grouped = self.generate(batch, options, cap)
        # the best one's score, normalised as fairseq normalises (the rest are listed, not compared)
        best = self.log_probs_batch(batch, [group[0] for group in grouped])
        lenpen = options.get("lenpen", 1.0)
        return [[Hyp(t, sum(lp) / len(t) ** lenpen if k == 0 else float("nan")) for k, t in enumerate(group)]
                for group, lp in zip(grouped, best)]

    def log_probs_batch(self, srcs: list[list[int]], hyps: list[list[int]]) -> list[list[float]]:
        """Teacher-forced, one forward pass for the batch: sources and decoder inputs right-padded
        (the causal mask keeps a position from seeing the padding after it)."""
        def padded(rows):
            width = max(map(len, rows))
            return torch.tensor([r + [PAD] * (width - len(r)) for r in rows])
        src, prev = padded(srcs), padded([[self.start[0]] + h[:-1] for h in hyps])
        with torch.no_grad():
            logits = self.model(input_ids=src, attention_mask=src.ne(PAD), decoder_input_ids=prev, use_cache=False).logits
        lp = torch.log_softmax(logits.float(), -1)                                   # [B, T, V]
        return [lp[b, :len(h)].gather(1, torch.tensor(h)[:, None])[:, 0].tolist() for b, h in enumerate(hyps)]

    def log_probs(self, src: list[int], tokens: list[int]) -> list[float]:
        return self.log_probs_batch([src], [tokens])[0]


class FSMTSystem(TransformersSystem):
    """transformers' FSMT: its own tokenizer (Moses, with punctuation normalised, and BPE)."""
    start = DecoderStart()       # the decoder starts from </s> and ends on it, nothing forced

    def __init__(self, model_dir: Path, langs: tuple[str, str] | None = None):
        from transformers import FSMTForConditionalGeneration, FSMTTokenizer

        _quiet_transformers()
        self.label, self.dir = f"transformers:{model_dir}", Path(model_dir)
        self.model = FSMTForConditionalGeneration.from_pretrained(model_dir).eval()
        self.tokenizer = FSMTTokenizer.from_pretrained(model_dir)
        self.langs = _one_direction(model_dir, (self.tokenizer.src_lang, self.tokenizer.tgt_lang), langs)
        self.max_positions = self.model.config.max_position_embeddings

    def symbols(self, ids: list[int]) -> str:
        pieces = [self.tokenizer.decoder[i] for i in ids if i != EOS]                  # the target side's tokens
        return " ".join(_fsmt_pieces(pieces))

    def decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=True)

    def target_ids(self, text: str) -> list[int]:
        """A target-side text as the decoder's ids (FSMTTokenizer encodes the source side only): its
        own pipeline in the target language, its BPE, the target vocabulary, then </s>."""
        t, lang = self.tokenizer, self.tokenizer.tgt_lang
        ids = {piece: i for i, piece in t.decoder.items()}
        pieces = [p for w in t.moses_tokenize(t.moses_pipeline(text, lang), lang) for p in t.bpe(w).split(" ")]
        return [ids.get(p, UNK) for p in pieces] + [EOS]

    def stages(self, line: str) -> dict[str, list]:
        t, lang = self.tokenizer, self.tokenizer.src_lang
        return {"moses": t.moses_tokenize(t.moses_pipeline(line, lang), lang),
                "bpe": _fsmt_pieces(t.tokenize(line)), "ids": t.encode(line)}


class M2M100System(TransformersSystem):
    """transformers' M2M100 with the tokenizer its directory names (M2M100Tokenizer, or NllbTokenizer
    for NLLB codes), in one direction: the source language's token where the tokenizer puts it, the
    target's forced first (``forced_bos_token_id``), as fairseq's task places them."""
    time_major = False

    def __init__(self, model_dir: Path, langs: tuple[str, str] | None = None):
        from transformers import AutoTokenizer, M2M100ForConditionalGeneration

        if not langs:
            raise UnusableSystem(f"transformers:{model_dir}: a multilingual model: give the direction "
                                 "(--source-lang and --target-lang)")
        _quiet_transformers()
        self.label, self.dir = f"transformers:{model_dir}", Path(model_dir)
        self.model = M2M100ForConditionalGeneration.from_pretrained(model_dir).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.tokenizer.src_lang, self.tokenizer.tgt_lang = langs
        self.langs = tuple(langs)
        # the target side's encoding of an empty text: its forced tokens, then </s>
        forced = self.tokenizer(text_target="")["input_ids"][:-1]
        if len(forced) != 1:
            raise UnusableSystem(f"transformers:{model_dir}: the tokenizer does not put one {langs[1]} token first "
                                 f"on the target side ({forced})")
        self.start = DecoderStart(self.model.config.decoder_start_token_id, tuple(forced))
        self.max_positions = self.model.config.max_position_embeddings

    def symbols(self, ids: list[int]) -> str:
        return " ".join(self.tokenizer.convert_ids_to_tokens([i for i in ids if i != EOS and i not in self.start[1]]))

    def decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=True)

    def target_ids(self, text: str) -> list[int]:
        return self.tokenizer(text_target=text)["input_ids"]

    def stages(self, line: str) -> dict[str, list]:
        return {"moses": line.split(), "bpe": self.tokenizer.tokenize(line), "ids": self.tokenizer(line)["input_ids"]}


class BartSystem(TransformersSystem):
    """transformers' Bart with its BartTokenizer (GPT-2's byte-level BPE, ``<s> … </s>`` around the
    source), and the first token its generation_config.json forces (``forced_bos_token_id``: ``<s>``, as
    BARTHubInterface forces it, in a faithful conversion). Pieces are shown
    as fairseq names them (GPT-2 ids, through the directory's encoder.json) where it has one."""
    time_major = False

    def __init__(self, model_dir: Path, langs: tuple[str, str] | None = None):
        from transformers import BartForConditionalGeneration, BartTokenizer

        from porting.format import GPT2_ENCODER_FILE
        from porting.tokenizer import byte_level_symbols

        _quiet_transformers()
        self.label, self.dir = f"transformers:{model_dir}", Path(model_dir)
        self.model = BartForConditionalGeneration.from_pretrained(model_dir).eval()
        self.tokenizer = BartTokenizer.from_pretrained(model_dir)
        # what the directory tells generate(): BART's hub forces <s>, and a directory that does not say so
        # (forced_bos_token_id) generates without it, which the harness names as a mapping fault
        generation = self.model.generation_config
        forced = generation.forced_bos_token_id
        self.start = DecoderStart(generation.decoder_start_token_id if generation.decoder_start_token_id is not None
                      else self.model.config.decoder_start_token_id, () if forced is None else (forced,))
        self.max_positions = self.model.config.max_position_embeddings
        # the task's suffixes our converter records (a hub BART directory has none: the given direction stands)
        self.langs = _one_direction(model_dir, getattr(self.model.config, "langs", None) or langs or ("source", "target"),
                                    langs)
        self.fairseq_symbols = byte_level_symbols(model_dir) if (self.dir / GPT2_ENCODER_FILE).is_file() else None

    def _pieces(self, ids: list[int]) -> list[str]:
        if self.fairseq_symbols is None:
            return self.tokenizer.convert_ids_to_tokens(ids)
        return [self.fairseq_symbols[i] if i < len(self.fairseq_symbols) else "<unk>" for i in ids]

    def symbols(self, ids: list[int]) -> str:
        return " ".join(self._pieces([i for i in ids if i not in (EOS, self.tokenizer.bos_token_id)]))

    def decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=True)

    def target_ids(self, text: str) -> list[int]:
        return self.tokenizer(text_target=text)["input_ids"]

    def stages(self, line: str) -> dict[str, list]:
        # cut to model_max_length as BART's hub cuts (<s> and </s> kept): without it a long document
        # asks for positions the model does not have
        ids = self.tokenizer(line, truncation=True)["input_ids"]
        pieces = self._pieces(self.tokenizer.convert_tokens_to_ids(self.tokenizer.tokenize(line)))   # uncut, as apply_bpe
        return {"moses": line.split(), "bpe": pieces, "ids": ids}


class MBartSystem(TransformersSystem):
    """transformers' MBart with its MBartTokenizer (SentencePiece, pieces at their SentencePiece id + 1,
    ``</s> [xx_YY]`` after the source), in the direction the tokenizer's settings name; the decoder starts
    from and the search ends on the tokens its generation_config.json names (the target language's token,
    as fairseq's generator, in a faithful conversion; a directory ending on </s> runs on past it, which the
    harness names)."""
    time_major = False

    def __init__(self, model_dir: Path, langs: tuple[str, str] | None = None):
        from transformers import MBartForConditionalGeneration, MBartTokenizer

        _quiet_transformers()
        self.label, self.dir = f"transformers:{model_dir}", Path(model_dir)
        self.model = MBartForConditionalGeneration.from_pretrained(model_dir).eval()
        self.tokenizer = MBartTokenizer.from_pretrained(model_dir)
        self.langs = _one_direction(model_dir, getattr(self.model.config, "langs", None)
                                    or (self.tokenizer.src_lang, self.tokenizer.tgt_lang), langs)
        self.tokenizer.src_lang, self.tokenizer.tgt_lang = self.langs
        generation = self.model.generation_config
        end = generation.eos_token_id[0] if isinstance(generation.eos_token_id, list) else generation.eos_token_id
        self.start = DecoderStart(generation.decoder_start_token_id, (), end)
        self.max_positions = self.model.config.max_position_embeddings

    def symbols(self, ids: list[int]) -> str:
        left_out = (EOS, self.tokenizer.bos_token_id, self.start.end)
        return " ".join(self.tokenizer.convert_ids_to_tokens([i for i in ids if i not in left_out]))

    def decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=True)

    def target_ids(self, text: str) -> list[int]:
        return self.tokenizer(text_target=text)["input_ids"]

    def stages(self, line: str) -> dict[str, list]:
        return {"moses": line.split(), "bpe": self.tokenizer.tokenize(line), "ids": self.tokenizer(line)["input_ids"]}


# transformers' model_type -> its adapter: one per family's transformers class (each converter family's
# MODEL_TYPE; tests/test_families.py checks every family has one)
TRANSFORMERS_ADAPTERS = {"fsmt": FSMTSystem, "m2m_100": M2M100System, "bart": BartSystem, "mbart": MBartSystem}


class CTranslate2System:
    """A CTranslate2 model as its users run it: text through the tokenizer the export carries
    (converters/ctranslate2: DIR/tokenizer), pieces in, the target prefix the model's family forces
    (a multilingual model's language token), pieces out, the tokenizer's own decoding. Pieces become
    ids through the original's vocabulary, never CTranslate2's own, so a fault in its vocabulary
    shows as a difference instead of being mapped away."""
    kind = "ctranslate2"
    search_rules = "CTranslate2's own beam search bookkeeping (when a sentence ends, which ended hypotheses are kept)"
    scores_forced = False        # a target prefix's tokens add nothing to a hypothesis' score
    boundaries = None            # its layers run in C++ and expose no tensors
    shadows = False

    def __init__(self, model_dir: Path, langs: tuple[str, str] | None = None, threads: int | None = None,
                 compute_type: str = "default"):
        """compute_type: CTranslate2's ("default": the type the model was written in)."""
        from converters.ctranslate2.convert import TOKENIZER_DIR, stored_weight_type, vocabularies
        from porting.format import ConfigError
        from porting.tokenizer import open_tokenizer

        model_dir = Path(model_dir)
        require("ctranslate2", f"ctranslate2:{model_dir}")
        if not (model_dir / "model.bin").is_file():
            raise UnusableSystem(f"ctranslate2:{model_dir}: no model.bin: not a CTranslate2 model directory")
        shared = model_dir / "shared_vocabulary.json"
        files = [shared] if shared.is_file() else [model_dir / "source_vocabulary.json", model_dir / "target_vocabulary.json"]
        if missing := [str(f) for f in files if not f.is_file()]:
            raise UnusableSystem(f"ctranslate2:{model_dir}: missing vocabulary {', '.join(missing)}")
        tokenizer_dir = model_dir / TOKENIZER_DIR
        if not (tokenizer_dir / "config.json").is_file():
            raise UnusableSystem(f"ctranslate2:{model_dir}: no {TOKENIZER_DIR}/config.json: the harness runs a "
                                 "CTranslate2 model with the tokenizer of the model it was converted from, which "
                                 "`porting convert ctranslate2` writes beside it (convert it with that command)")
        try:
            self.tokenizer = open_tokenizer(tokenizer_dir, source_lang=langs and langs[0],
                                            target_lang=langs and langs[1])
            source, target = vocabularies(tokenizer_dir)
        except (ConfigError, OSError, ValueError) as e:
            raise UnusableSystem(f"ctranslate2:{model_dir}: {e}") from None
        import ctranslate2

        self.label, self.dir = f"ctranslate2:{model_dir}", model_dir
        self.langs = (self.tokenizer.source_lang, self.tokenizer.target_lang)
        self.src_pieces, self.tgt_pieces = source, target
        self.tgt_ids = {t: i for i, t in enumerate(target)}
        # where CTranslate2 starts and ends is its own config.json's (the export writes the family's:
        # converters.ctranslate2.convert.start_and_end); the prefix is the tokenizer's, given as target_prefix
        ct2_config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
        named = [ct2_config.get("decoder_start_token", "</s>"), ct2_config.get("eos_token", "</s>")]
        if unknown := [t for t in named if t not in self.tgt_ids]:
            raise UnusableSystem(f"ctranslate2:{model_dir}: config.json names {', '.join(unknown)}, not in its target vocabulary")
        self.start = DecoderStart(self.tgt_ids[named[0]], self.tokenizer.prefix, self.tgt_ids[named[1]])
        self.source_eos = ct2_config.get("add_source_eos", True)
        self.translator = ctranslate2.Translator(str(model_dir), device="cpu", compute_type=compute_type,
                                                 inter_threads=1, intra_threads=threads or torch.get_num_threads())
        self.max_positions = 1 << 16                 # CTranslate2 has no position bound to respect beyond its table
        # what it computes in ("int8_float32": the type the model was written in, as this CPU runs it), or
        # where the CPU computes float32, the type its weights were rounded to when written (float16)
        compute, stored = self.translator.compute_type, stored_weight_type(model_dir)
        self.approximation = compute if compute != "float32" else (None if stored == "float32" else stored)

    def stages(self, line: str) -> dict[str, list]:
        return tokenizer_stages(self.tokenizer, line)

    def symbols(self, ids: list[int]) -> str:
        return self.tokenizer.symbols(ids)

    def decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens)

    def mapping(self, options: dict, cap: int | None = None) -> Mapping:
        # max_decoding_length counts the tokens before </s>, and stops at the cap without one (NOTES.md)
        settings = {"beam_size": options.get("beam", 5), "num_hypotheses": options.get("nbest", 1),
                    "length_penalty": options.get("lenpen", 1.0),
                    "max_decoding_length": cap if cap is not None else options.get("max_len_b", 200),
                    "min_decoding_length": options.get("min_len", 1),
                    "no_repeat_ngram_size": options.get("no_repeat_ngram_size", 0)}
        return Mapping(settings, _not_expressible(options, "CTranslate2"))

    def _pieces(self, ids: list[int]) -> list[str]:
        # CTranslate2 appends </s> itself where add_source_eos is on (mBART's source ends with its language token)
        return [self.src_pieces[i] for i in (ids[:-1] if self.source_eos else ids)]

    def _prefixes(self, n: int) -> list[list[str]] | None:
        prefix = [self.tgt_pieces[t] for t in self.start[1]]
        return [prefix] * n if prefix else None

    def generate(self, batch: list[list[int]], options: dict, cap: int | None = None) -> list[list[list[int]]]:
        """Each line's n-best as ids in the original's vocabulary (no scores: the benchmark times this)."""
        m = self.mapping(options, cap).settings
        results = self.translator.translate_batch([self._pieces(s) for s in batch], self._prefixes(len(batch)),
                                                  max_batch_size=len(batch), return_end_token=True, **m)
        out = []
        for r in results:
            hyps = []
            for pieces in r.hypotheses:
                tokens = [self.tgt_ids.get(p, UNK) for p in pieces]
                end = self.start.end
                hyps.append(tokens if tokens[-1:] == [end] else tokens + [end])  # at the cap: fairseq's forced end
            out.append(hyps)
        return out

    def translate(self, batch: list[list[int]], options: dict, cap: int | None = None) -> list[list[Hyp]]:
        out = [[Hyp(t, float("nan")) for t in hyps] for hyps in self.generate(batch, options, cap)]
        best = self.log_probs_batch(batch, [hyps[0].tokens for hyps in out])    # scored as fairseq normalises
        for hyps, lp in zip(out, best):
            hyps[0].score = sum(lp) / len(hyps[0].tokens) ** options.get("lenpen", 1.0)
        return out

    def log_probs_batch(self, srcs: list[list[int]], hyps: list[list[int]]) -> list[list[float]]:
        """score_batch scores the given tokens and then the end token (</s>; mBART's target language token):
        a hypothesis ending with it is given without it; a prefix (no end token) drops that last score."""
        ended = [h[-1:] == [self.start.end] for h in hyps]
        targets = [[self.tgt_pieces[t] for t in (h[:-1] if e else h)] for h, e in zip(hyps, ended)]
        results = self.translator.score_batch([self._pieces(s) for s in srcs], targets)
        return [list(r.log_probs) if e else list(r.log_probs)[:-1] for r, e in zip(results, ended)]

    def log_probs(self, src: list[int], tokens: list[int]) -> list[float]:
        return self.log_probs_batch([src], [tokens])[0]
