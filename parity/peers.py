"""The peers users deploy, as systems the harness can put under test (the contract: parity/systems.py).

- transformers' FSMT: its own tokenizer, its layers' outputs through forward hooks at the boundaries
  parity/names.py declares (FSMT keeps fairseq's module names under ``model.``), teacher-forced
  log-probs from one forward pass, generation through ``generate()``;
- CTranslate2: no tokenizer (it takes pieces: it is fed the original's) and no tensors (its C++
  layers expose none), log-probs from ``score_batch``, generation through ``translate_batch``.

fairseq's options are mapped to each system's own names; what a system cannot express is listed, and
the closest mapping is used, never silently replaced.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from parity import names
from parity.systems import Hyp, Mapping, UnusableSystem
from porting.format import EOS, PAD, UNK


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


class TransformersSystem:
    kind = "transformers"
    search_rules = ("transformers' beam search: early_stopping=True ends a sentence once `num_beams` hypotheses "
                    "have ended and keeps the best ones, fairseq keeps the first ones found")

    def __init__(self, model_dir: Path):
        config_file = Path(model_dir) / "config.json"
        if not config_file.is_file():
            raise UnusableSystem(f"transformers:{model_dir}: no config.json: not a transformers model directory")
        model_type = json.loads(config_file.read_text(encoding="utf-8")).get("model_type")
        if model_type != "fsmt":
            raise UnusableSystem(f"transformers:{model_dir}: a {model_type!r} model; the harness declares its boundaries "
                              "for FSMT (model_type 'fsmt')")
        from transformers import FSMTForConditionalGeneration, FSMTTokenizer
        from transformers.utils import logging as transformers_logging

        # quiet, as every command is: its warnings here are the tie advice that is wrong for separate
        # dictionaries (porting/NOTES.md) and flags greedy search ignores; the report lists the mapping
        transformers_logging.set_verbosity_error()
        transformers_logging.disable_progress_bar()
        self.label, self.dir = f"transformers:{model_dir}", Path(model_dir)
        self.model = FSMTForConditionalGeneration.from_pretrained(model_dir).eval()
        self.tokenizer = FSMTTokenizer.from_pretrained(model_dir)
        self.max_positions = self.model.config.max_position_embeddings

    def boundary_table(self) -> list:
        return names.boundaries(len(self.model.model.encoder.layers), len(self.model.model.decoder.layers), False, False)

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

    def mapping(self, options: dict, cap: int | None = None) -> Mapping:
        settings = {"num_beams": options.get("beam", 5), "num_return_sequences": options.get("nbest", 1),
                    "length_penalty": options.get("lenpen", 1.0), "early_stopping": True, "do_sample": False,
                    # transformers counts the start token and </s> in max_length, the start token in min_length
                    "max_length": (cap if cap is not None else options.get("max_len_b", 200)) + 2,
                    "min_length": options.get("min_len", 1) + 1,
                    "no_repeat_ngram_size": options.get("no_repeat_ngram_size", 0)}
        return Mapping(settings, _not_expressible(options, "transformers"))

    def boundaries(self, src: torch.Tensor, prev: torch.Tensor, replace=None) -> dict[str, torch.Tensor]:
        if replace is not None:
            raise UnusableSystem("shadow mode feeds the original's tensors into the port's layers: the native port only")
        model = self.model
        seen, handles = {}, []
        for b in names.boundaries(len(model.model.encoder.layers), len(model.model.decoder.layers), False, False):
            if not b.fairseq_module:
                continue
            module = model.get_submodule(names.FSMT_PREFIX + b.fairseq_module)

            def grab(_module, args, output=None, name=b.name, taken=b.taken_from):
                x = args[0] if taken == "input" else output[0]
                seen[name] = x[:, 0].detach()                                     # [T, B=1, C] -> [T, C]
            handles.append(module.register_forward_pre_hook(grab) if b.taken_from == "input"
                           else module.register_forward_hook(grab))
        try:
            with torch.no_grad():
                logits = model(input_ids=src[None], decoder_input_ids=prev[None], use_cache=False).logits
        finally:
            for h in handles:
                h.remove()
        seen["decoder.logits"] = logits[0]
        seen["decoder.lprobs"] = torch.log_softmax(logits[0].float(), -1)
        return seen

    def translate(self, batch: list[list[int]], options: dict, cap: int | None = None) -> list[list[Hyp]]:
        m = self.mapping(options, cap).settings
        width = max(map(len, batch))
        ids = torch.tensor([x + [PAD] * (width - len(x)) for x in batch])       # right-padded, as FSMT expects
        with torch.no_grad():
            out = self.model.generate(ids, attention_mask=ids.ne(PAD), **m).tolist()
        n = m["num_return_sequences"]
        hyps = []
        for row in out:
            row = row[1:]                                                       # the decoder start </s>
            tokens = row[: row.index(EOS) + 1] if EOS in row else row + [EOS]   # at the cap: fairseq's forced </s>
            hyps.append(tokens)
        grouped = [hyps[i:i + n] for i in range(0, len(hyps), n)]
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
        src, prev = padded(srcs), padded([[EOS] + h[:-1] for h in hyps])
        with torch.no_grad():
            logits = self.model(input_ids=src, attention_mask=src.ne(PAD), decoder_input_ids=prev, use_cache=False).logits
        lp = torch.log_softmax(logits.float(), -1)                                   # [B, T, V]
        return [lp[b, :len(h)].gather(1, torch.tensor(h)[:, None])[:, 0].tolist() for b, h in enumerate(hyps)]

    def log_probs(self, src: list[int], tokens: list[int]) -> list[float]:
        return self.log_probs_batch([src], [tokens])[0]


class CTranslate2System:
    kind = "ctranslate2"
    search_rules = "CTranslate2's own beam search bookkeeping (when a sentence ends, which ended hypotheses are kept)"

    def __init__(self, model_dir: Path):
        model_dir = Path(model_dir)
        if not (model_dir / "model.bin").is_file():
            raise UnusableSystem(f"ctranslate2:{model_dir}: no model.bin: not a CTranslate2 model directory")
        shared = model_dir / "shared_vocabulary.json"
        files = [shared, shared] if shared.is_file() else [model_dir / "source_vocabulary.json",
                                                           model_dir / "target_vocabulary.json"]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise UnusableSystem(f"ctranslate2:{model_dir}: missing vocabulary {', '.join(dict.fromkeys(missing))}")
        import ctranslate2

        self.label, self.dir = f"ctranslate2:{model_dir}", model_dir
        self.src_tokens, self.tgt_tokens = (json.loads(f.read_text(encoding="utf-8")) for f in files)
        self.tgt_ids = {t: i for i, t in enumerate(self.tgt_tokens)}
        self.translator = ctranslate2.Translator(str(model_dir), device="cpu", compute_type="default",
                                                 inter_threads=1, intra_threads=torch.get_num_threads())
        self.max_positions = 1 << 16                 # CTranslate2 has no position bound to respect beyond its table

    stages = None                                    # CTranslate2 takes pieces: it is fed the original's
    target_lang: str | None = None                   # for detokenizing its pieces (the run says which)

    def symbols(self, ids: list[int]) -> str:
        return " ".join(self.tgt_tokens[i] for i in ids if i != EOS)

    def decode(self, tokens: list[int]) -> str:
        """Its pieces as fairseq's hub post-processes them: BPE joined, then Moses-detokenized."""
        from sacremoses import MosesDetokenizer

        text = (self.symbols(tokens) + " ").replace("@@ ", "").strip()
        return MosesDetokenizer(lang=self.target_lang or "en").detokenize(text.split()) if text else ""

    def mapping(self, options: dict, cap: int | None = None) -> Mapping:
        # max_decoding_length counts the tokens before </s>, and stops at the cap without one (NOTES.md)
        settings = {"beam_size": options.get("beam", 5), "num_hypotheses": options.get("nbest", 1),
                    "length_penalty": options.get("lenpen", 1.0),
                    "max_decoding_length": cap if cap is not None else options.get("max_len_b", 200),
                    "min_decoding_length": options.get("min_len", 1),
                    "no_repeat_ngram_size": options.get("no_repeat_ngram_size", 0)}
        return Mapping(settings, _not_expressible(options, "CTranslate2"))

    boundaries = None                                # no tensors exposed

    def _pieces(self, ids: list[int]) -> list[str]:
        return [self.src_tokens[i] for i in ids[:-1]]                           # CTranslate2 appends </s> itself

    def translate(self, batch: list[list[int]], options: dict, cap: int | None = None) -> list[list[Hyp]]:
        m = self.mapping(options, cap).settings
        results = self.translator.translate_batch([self._pieces(s) for s in batch], max_batch_size=len(batch),
                                                  return_scores=True, return_end_token=True, **m)
        out = []
        for src, r in zip(batch, results):
            hyps = []
            for pieces in r.hypotheses:
                tokens = [self.tgt_ids.get(p, UNK) for p in pieces]
                tokens = tokens if tokens[-1:] == [EOS] else tokens + [EOS]     # at the cap: fairseq's forced </s>
                hyps.append(tokens)
            out.append([Hyp(t, float("nan")) for t in hyps])
        best = self.log_probs_batch(batch, [hyps[0].tokens for hyps in out])    # scored as fairseq normalises
        for hyps, lp in zip(out, best):
            hyps[0].score = sum(lp) / len(hyps[0].tokens) ** options.get("lenpen", 1.0)
        return out

    def log_probs_batch(self, srcs: list[list[int]], hyps: list[list[int]]) -> list[list[float]]:
        """score_batch scores the given tokens and then </s>: a hypothesis ending with </s> is given
        without it; a prefix (no </s>) drops that last score."""
        ended = [h[-1:] == [EOS] for h in hyps]
        targets = [[self.tgt_tokens[t] for t in (h[:-1] if e else h)] for h, e in zip(hyps, ended)]
        results = self.translator.score_batch([self._pieces(s) for s in srcs], targets)
        return [list(r.log_probs) if e else list(r.log_probs)[:-1] for r, e in zip(results, ended)]

    def log_probs(self, src: list[int], tokens: list[int]) -> list[float]:
        return self.log_probs_batch([src], [tokens])[0]
