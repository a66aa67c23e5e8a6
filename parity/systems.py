"""The systems the harness can put under test, behind one contract, and the native port's side of it.

A system is what a user deploys: our port (``native:DIR``), a transformers model (``transformers:DIR``,
parity/peers.py) or a CTranslate2 model (``ctranslate2:DIR``, parity/peers.py). The original's side is
always a run in the recorder's format (parity/record.py), so every system is compared the same way:

- ``stages(line)``: its own tokenization, per stage (None: it takes pieces from its caller, and is fed
  the original's);
- ``boundaries(src, prev, replace)``: teacher-forced tensors at the layer boundaries parity/names.py
  declares, [T, C] (logits and log-probs [T, V]); None where the system exposes none;
- ``translate(batch, options, caps)``: the n-best of each line, fairseq's options mapped to the
  system's own (``mapping`` says how, and what it cannot express);
- ``log_probs(src, tokens)``: teacher-forced log-probs of any hypothesis (</s> included), the raw
  model's, for finding why two systems part.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

KINDS = ("native", "transformers", "ctranslate2")


class UnusableSystem(Exception):
    """A system that cannot be opened, or a comparison it cannot take part in (a usage error)."""


@dataclass
class Hyp:
    tokens: list[int]            # ends with </s>, as fairseq's
    score: float                 # the system's own final score


@dataclass
class Mapping:
    """fairseq's options in a system's own terms."""
    settings: dict
    not_expressible: list[str] = field(default_factory=list)   # "unkpen=-8.0: ..." (the closest mapping is used)


def parse(spec: str) -> tuple[str, Path]:
    """``kind:DIR`` (a bare path means native:DIR)."""
    kind, sep, where = spec.partition(":")
    if not sep or kind not in KINDS:
        return "native", Path(spec)
    if not where:
        raise UnusableSystem(f"{spec}: give the directory after {kind}:")
    return kind, Path(where)


def open_system(spec: str, kernels: str = "fast", langs: tuple[str, str] | None = None):
    """The system a ``--port`` names, opened (its files read and checked). langs: the direction
    (a multilingual model's is required; a bilingual model's is its own)."""
    kind, where = parse(spec)
    if kind == "native":
        return NativeSystem(where, kernels, langs)
    from parity import peers

    return peers.TransformersSystem(where) if kind == "transformers" else peers.CTranslate2System(where)


def fairseq_cap(options: dict, width: int, max_positions: int) -> int:
    """The most tokens before </s> fairseq's search allows a batch: max_len_a applies to the batch's
    padded source width (fairseq/sequence_generator.py), and the positions bound it."""
    return min(int(options.get("max_len_a", 0.0) * width + options.get("max_len_b", 200)), max_positions - 1)


class NativeSystem:
    """Our port: a converted directory, decoded with fairseq's own rules."""
    kind = "native"
    search_rules = None          # fairseq's own: a search difference that is no tie is unexplained

    def __init__(self, model_dir: Path, kernels: str = "fast", langs: tuple[str, str] | None = None):
        from porting.format import ConfigError
        from porting.generation.ensemble import Ensemble
        from porting.model.load import load_ensemble
        from porting.tokenizer import open_tokenizer

        try:
            self.config, self.members = load_ensemble(model_dir)
            self.tokenizer = open_tokenizer(model_dir, source_lang=langs and langs[0], target_lang=langs and langs[1])
        except ConfigError as e:
            raise UnusableSystem(f"native: {e}") from None
        self.label, self.dir = f"native:{model_dir}", Path(model_dir)
        self.ensemble = Ensemble(self.members, kernels)
        # the decoder's start token and the forced first tokens (a multilingual model's language token)
        self.start = (self.tokenizer.bos, self.tokenizer.prefix)
        self.max_positions = self.members[0].arch.max_target_positions

    def boundary_table(self) -> list:
        from parity import names

        a = self.members[0].arch
        return names.boundaries(a.encoder_layers, a.decoder_layers, a.encoder_normalize_before, a.decoder_final_norm)

    def symbols(self, ids: list[int]) -> str:
        return self.tokenizer.symbols(ids)

    def decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens)

    def stages(self, line: str) -> dict[str, list]:
        t = self.tokenizer
        return {"moses": t.moses_tokens(line).split(), "bpe": t.encode_pieces(line).split(), "ids": t.encode(line)}

    def mapping(self, options: dict, cap: int | None = None) -> Mapping:
        return Mapping(dict(options))                                # fairseq's names, fairseq's meaning

    def boundaries(self, src: torch.Tensor, prev: torch.Tensor, replace=None) -> dict[str, torch.Tensor]:
        """replace(name, x [T, C]) -> a tensor to go on with instead (shadow mode), or None."""
        model = self.members[0]
        seen = {}

        def hook(name, x):
            seen[name] = x[:, 0]                                           # [T, B=1, C] -> [T, C]
            if replace is not None and (r := replace(name, x[:, 0])) is not None:
                return r.to(x.dtype)[:, None]                              # [T, C] -> [T, 1, C]
            return None
        with torch.no_grad():
            logits = model(src[None], prev[None], hooks=hook)
        seen["decoder.logits"] = logits[0]
        seen["decoder.lprobs"] = model.log_probs(logits)[0]
        return seen

    def translate(self, batch: list[list[int]], options: dict, caps: int | None = None) -> list[list[Hyp]]:
        from porting.generation.beam import generate, left_pad
        from porting.generation.options import GenerationOptions

        # fairseq's own rules, as recorded: its inert n-gram blocking and its cap from the batch's width
        opts = GenerationOptions(**options, ngram_blocking="fairseq", max_len_from="batch-width")
        return [[Hyp(h.tokens, h.score) for h in hyps]
                for hyps in generate(self.ensemble, left_pad(batch), opts, None, self.start)]

    def log_probs(self, src: list[int], tokens: list[int]) -> list[float]:
        """The ensemble's log-probs (fairseq's: the log of the members' mean probability)."""
        prev = torch.tensor([[self.start[0]] + tokens[:-1]])
        with torch.no_grad():
            per_member = torch.stack([m.log_probs(m(torch.tensor([src]), prev))[0] for m in self.members])
        lp = torch.logsumexp(per_member, 0) - math.log(len(self.members))   # [T, V]
        return lp.gather(1, torch.tensor(tokens)[:, None])[:, 0].tolist()
