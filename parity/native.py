"""Our port as a system under test (the contract: parity/contract.py): a converted directory,
decoded with fairseq's own rules."""
from __future__ import annotations

import math
from pathlib import Path

import torch

from parity.contract import Hyp, Mapping, UnusableSystem, tokenizer_stages
from porting.kernels import QUANTIZE_MODES


class NativeSystem:
    """Our port: a converted directory, decoded with fairseq's own rules."""
    kind = "native"
    search_rules = None          # fairseq's own: a search difference that is no tie is unexplained
    scores_forced = True         # fairseq's: a forced token's log-prob counts in the hypothesis' score
    shadows = True               # boundaries() takes the original's tensors in place of its own

    def __init__(self, model_dir: Path, kernels: str = "fast", langs: tuple[str, str] | None = None,
                 dtype: str = "float32", quantize: str | None = None):
        """dtype, quantize: as `porting translate` runs it (bfloat16; int8 quantization): an approximate
        port, held to its type's budget."""
        from porting.format import ConfigError
        from porting.model.load import load_ensemble
        from porting.tokenizer import decoder_start, open_tokenizer
        from porting.translator import runtime_dtype, runtime_ensemble

        try:
            torch_dtype = runtime_dtype(dtype, kernels, quantize)
            self.config, self.members = load_ensemble(model_dir, torch_dtype)
            self.tokenizer = open_tokenizer(model_dir, source_lang=langs and langs[0], target_lang=langs and langs[1])
        except (ConfigError, ValueError) as e:
            raise UnusableSystem(f"native: {e}") from None
        self.label, self.dir = f"native:{model_dir}", Path(model_dir)
        self.langs = (self.tokenizer.source_lang, self.tokenizer.target_lang)
        self.ensemble = runtime_ensemble(self.members, kernels, quantize)
        # either int8 mode is held to int8's budget (``int8`` on a small model quantizes nothing, and
        # meets it as the float32 port does; what it quantized is logged by runtime_ensemble)
        self.approximation = "int8" if quantize in QUANTIZE_MODES else (None if dtype == "float32" else dtype)
        # the decoder's start token, the forced first tokens and the end token (porting.format.DecoderStart)
        self.start = decoder_start(self.tokenizer)
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
        return tokenizer_stages(self.tokenizer, line)

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
        lp = torch.logsumexp(per_member.float(), 0) - math.log(len(self.members))   # [T, V]
        return lp.gather(1, torch.tensor(tokens)[:, None])[:, 0].tolist()
