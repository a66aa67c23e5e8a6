"""Models decoding together: one, or several as fairseq's checkpoint ensemble, on a chosen kernel set."""
from __future__ import annotations

import math

import torch
from torch import Tensor

from porting.format import EOS, PAD, UNK, DecoderStart
from porting.kernels.fast_decoder import FastDecoder, top_candidates
from porting.kernels.fast_encoder import FastEncoder
from porting.model.transformer import EncoderOut, LayerCache, Transformer

# "fast": the fast path on porting/kernels/skinny.c's kernels where they are built; "portable": the
# same path on torch's kernels alone (what runs where they cannot be built); "exact": fairseq's
# kernels operation by operation.
KERNELS = ("fast", "portable", "exact")


class ExactDecoder:
    """fairseq's kernels operation by operation (``porting.model.transformer``'s decoder step): bitwise equal
    to fairseq. Same interface as ``porting.kernels.fast_decoder.FastDecoder``."""

    def __init__(self, model: Transformer):
        self.model = model
        self.heads = model.arch.decoder_attention_heads
        self.beam = 1

    def for_beam(self, enc: EncoderOut, beam: int) -> EncoderOut:
        """fairseq repeats each sentence's encoder output `beam` times; a beamable model (BART's) keeps it
        once and attends to it over the beam."""
        self.beam = beam
        if self.model.beamable and beam > 1:
            return EncoderOut(enc.out, enc.pad_mask, beam=beam)
        order = torch.arange(enc.out.size(1)).view(-1, 1).repeat(1, beam).view(-1)
        return enc.select(order)

    def new_caches(self) -> list[LayerCache]:
        return [LayerCache() for _ in self.model.decoder.layers]

    def step(self, prev: Tensor, enc: EncoderOut, caches: list[LayerCache]) -> Tensor:
        return self.model.decoder.step(prev, enc, caches)

    def reorder(self, caches: list[LayerCache], order: Tensor) -> None:
        """Follow the surviving hypotheses. Self-attention caches are reordered every step; encoder
        keys/values only when sentences have left the batch: fairseq skips them while the row count
        is unchanged (each sentence's rows hold identical copies, so a reorder within it is a no-op)."""
        heads = self.heads
        # a beamable model's encoder keys are one per sentence: its sentences, as fairseq's
        # reorder_incremental_state takes them (each sentence's first row, over the beam)
        shared = self.model.beamable and self.beam > 1
        enc_order = order.view(-1, self.beam)[:, 0] // self.beam if shared else order
        for cache in caches:
            same = cache.enc_k.size(0) == enc_order.numel() * heads
            for key, rows in (("k", order), ("v", order), *(() if same else (("enc_k", enc_order), ("enc_v", enc_order)))):
                t = getattr(cache, key)                                     # [N*H, t, D] -> [N, H, t, D], rows
                setattr(cache, key, t.view(-1, heads, t.size(1), t.size(2)).index_select(0, rows).view(-1, t.size(1), t.size(2)))
            if not same and cache.enc_mask is not None:
                cache.enc_mask = cache.enc_mask.index_select(0, enc_order)


class Ensemble:
    """One or several models decoding together (several = fairseq's checkpoint ensemble).

    kernels "exact": fairseq's kernels operation by operation (bitwise equal to fairseq);
    "fast": porting/kernels/'s encoder and decoder step (same hypotheses, last-bit differences in
    scores); "portable": the same on torch's kernels alone."""

    def __init__(self, models: list[Transformer], kernels: str = "fast"):
        if kernels not in KERNELS:
            raise ValueError(f"kernels must be one of {', '.join(KERNELS)}, got {kernels!r}")
        self.models = models
        self.kernels = kernels
        self.max_decoder_positions = min(m.arch.max_target_positions for m in models)
        if kernels == "exact":
            self.decoders, self.encoders = [ExactDecoder(m) for m in models], [m.encoder for m in models]
        else:
            use_native = kernels == "fast"
            self.decoders = [FastDecoder(m, use_native) for m in models]
            self.encoders = [FastEncoder(m, use_native) for m in models]
        # the search's top-2*beam candidates: the fast prefilter gives the same candidates, except
        # that among exactly tied scores it may pick or order another first (porting/NOTES.md)
        self.top_candidates = torch.topk if kernels == "exact" else top_candidates

    def encode(self, src_tokens: Tensor) -> list[EncoderOut]:
        return [encoder(src_tokens) for encoder in self.encoders]

    def for_beam(self, encs: list[EncoderOut], beam: int) -> list[EncoderOut]:
        """Encoder outputs as ``step`` wants them for `beam` rows per sentence."""
        return [d.for_beam(e, beam) for d, e in zip(self.decoders, encs)]

    def step(self, tokens: Tensor, encs: list[EncoderOut], caches: list[list]) -> Tensor:
        """Log-probs [N, V] of the next token after `tokens` [N, t]."""
        lprobs = [m.log_probs(d.step(tokens, enc, cache))
                  for m, d, enc, cache in zip(self.models, self.decoders, encs, caches)]
        if len(lprobs) == 1:
            return lprobs[0]
        return torch.logsumexp(torch.stack(lprobs, dim=0), dim=0) - math.log(len(lprobs))

    @property
    def vocab_size(self) -> int:
        return self.models[0].decoder.embed_tokens.num_embeddings

    def fuses_candidates(self) -> bool:
        """Whether ``step_candidates`` can work: one model on the fast kernels with output panels."""
        return len(self.models) == 1 and isinstance(self.decoders[0], FastDecoder) and self.decoders[0].output_panels is not None

    def step_candidates(self, tokens: Tensor, encs: list[EncoderOut], caches: list[list], prev_scores: Tensor | None,
                        beam: int, count: int, unkpen: float, ban_eos: bool, eos: int = EOS,
                        forced: Tensor | None = None) -> tuple[tuple[Tensor, Tensor] | None, Tensor | None]:
        """``step`` and the search's choice of candidates in one (``FastDecoder.candidates``; only where
        ``fuses_candidates``): ((scores, flat indices) [B, count], None), or (None, log-probs [N, V])
        where the kernel hands the step back. prev_scores [N] cumulative scores, None at step 0
        (one row per sentence then: all of a sentence's rows are equal). ``eos``: the search's end token
        (mBART's target language token), banned with ban_eos. ``forced`` [B]: the one token each sentence
        may take (``native.candidates``)."""
        decoder, model = self.decoders[0], self.models[0]
        x = decoder.hidden(tokens, encs[0], caches[0])                    # [N, C]
        rows, group = (x, beam) if prev_scores is not None else (x[::beam], 1)
        found = decoder.candidates(rows, prev_scores, group, count, pad=PAD, unk=UNK, eos=eos, unkpen=unkpen,
                                   ban_eos=ban_eos, forced=forced)
        return (found, None) if found is not None else (None, model.log_probs(decoder.logits(x)))

    def search(self, encs: list[EncoderOut], beam: int, limits: list[int], min_len: int, unkpen: float,
               start: DecoderStart) -> list[list[tuple[list[int], float, list[float]]]] | None:
        """The whole search for one model in one native call (``FastDecoder.search``: each sentence's
        hypotheses in the order they ended, cumulative scores); None where it does not run."""
        if len(self.decoders) != 1 or not isinstance(self.decoders[0], FastDecoder):
            return None
        return self.decoders[0].search(encs[0], beam, limits, min_len, unkpen, start.bos, start.end, tuple(start.prefix))

    def new_caches(self) -> list[list]:
        return [d.new_caches() for d in self.decoders]

    def reorder_caches(self, caches: list[list], order: Tensor) -> None:
        for d, model_caches in zip(self.decoders, caches):
            d.reorder(model_caches, order)
