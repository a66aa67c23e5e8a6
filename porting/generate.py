"""Beam search and greedy decoding as fairseq's ``SequenceGenerator`` does them, step by step.

Exact agreement with fairseq is possible only by reproducing its rules, not by re-deriving them:
  * 2 x beam candidates per sentence from one top-k over (beam x vocab) cumulative scores
    (at step 0 only the first beam row, since all rows are equal);
  * a candidate ending in </s> is finalised only if it ranks in the top `beam` candidates;
  * a sentence is done once `beam` hypotheses are finalised (not the best `beam`: the first), or at
    max_len, where everything but </s> is masked;
  * finalised scores are cumulative log-probs (</s> included) / (length incl. </s>) ** lenpen;
  * max_len = min(int(max_len_a * padded batch width + max_len_b), max positions - 1);
  * </s> is masked while step < min_len; <pad> is never chosen; unkpen is subtracted from <unk>;
  * ensembles average probabilities: logsumexp over the models' log-probs minus log(N).
Greedy decoding is this search with beam 1, as in fairseq.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from porting.fast import FastDecoder, top_candidates
from porting.fast_encoder import FastEncoder
from porting.model import PAD, EncoderOut, Transformer

EOS, UNK = 2, 3


@dataclass(frozen=True)
class GenerationOptions:
    """Named as fairseq names them."""
    beam: int = 5
    nbest: int = 1
    lenpen: float = 1.0
    unkpen: float = 0.0
    min_len: int = 1
    max_len_a: float = 0.0
    max_len_b: int = 200
    no_repeat_ngram_size: int = 0
    # "correct": ban every token that would repeat an n-gram of the hypothesis (fairseq's intent).
    # "fairseq": fairseq >= commit 8ca4813 on CPU, which compares against padding and never bans
    #            (fairseq issues #4709, #5206): for reproducing its outputs bug for bug.
    ngram_blocking: str = "correct"
    # "fairseq": a sentence is done once `beam` hypotheses ended (the first ones, kept as found).
    # "true" / "false" / "never": transformers' beam search rules (early_stopping=True/False/"never"):
    #     the best `beam` ended hypotheses are kept, and a sentence is done when that set is full and
    #     (true) at once, (false) the best running hypothesis, normalised at its current length,
    #     cannot beat the worst kept one, (never) the same bound at the maximum length when lenpen > 0.
    # Every other option keeps fairseq's meaning in all modes.
    early_stopping: str = "fairseq"

    def __post_init__(self):
        problems = []
        if self.beam < 1:
            problems.append(f"beam must be >= 1, got {self.beam}")
        if not 1 <= self.nbest <= self.beam:
            problems.append(f"nbest must be between 1 and beam ({self.beam}), got {self.nbest}")
        if self.min_len < 0 or self.no_repeat_ngram_size < 0:
            problems.append("min_len and no_repeat_ngram_size must be >= 0")
        if self.early_stopping not in ("fairseq", "true", "false", "never"):
            problems.append(f"early_stopping must be fairseq, true, false or never, got {self.early_stopping!r}")
        if self.ngram_blocking not in ("correct", "fairseq"):
            problems.append(f"ngram_blocking must be 'correct' or 'fairseq', got {self.ngram_blocking!r}")
        if problems:
            raise ValueError("; ".join(problems))


@dataclass
class Hypothesis:
    tokens: list[int]                 # ends with </s>; the leading </s> decoder input is not included
    score: float
    positional_scores: list[float]


KERNELS = ("fast", "exact")


class ExactDecoder:
    """fairseq's kernels operation by operation (``porting.model``'s decoder step): bitwise equal
    to fairseq. Same interface as ``porting.fast.FastDecoder``."""

    def __init__(self, model: Transformer):
        self.model = model
        self.heads = model.arch.decoder_attention_heads

    @staticmethod
    def for_beam(enc: EncoderOut, beam: int) -> EncoderOut:
        """fairseq repeats each sentence's encoder output `beam` times."""
        order = torch.arange(enc.out.size(1)).view(-1, 1).repeat(1, beam).view(-1)
        return enc.select(order)

    def step(self, prev: Tensor, enc: EncoderOut, caches: list[dict]) -> Tensor:
        return self.model.decoder.step(prev, enc, caches)

    def reorder(self, caches: list[dict], order: Tensor) -> None:
        """Follow the surviving hypotheses. Self-attention caches are reordered every step; encoder
        keys/values only when sentences have left the batch: fairseq skips them while the row count
        is unchanged (each sentence's rows hold identical copies, so a reorder within it is a no-op)."""
        heads = self.heads
        for cache in caches:
            keys = ("k", "v") if cache["enc_k"].size(0) == order.numel() * heads else ("k", "v", "enc_k", "enc_v")
            for key in keys:
                t = cache[key]                                              # [N*H, t, D]
                cache[key] = t.view(-1, heads, t.size(1), t.size(2)).index_select(0, order).view(-1, t.size(1), t.size(2))
            if "enc_k" in keys and cache["enc_mask"] is not None:
                cache["enc_mask"] = cache["enc_mask"].index_select(0, order)


class Ensemble:
    """One or several models decoding together (several = fairseq's checkpoint ensemble).

    kernels "exact": fairseq's kernels operation by operation (bitwise equal to fairseq);
    "fast": porting/fast.py's decoder step (same hypotheses, last-bit differences in scores)."""

    def __init__(self, models: list[Transformer], kernels: str = "fast"):
        if kernels not in KERNELS:
            raise ValueError(f"kernels must be one of {', '.join(KERNELS)}, got {kernels!r}")
        self.models = models
        self.kernels = kernels
        self.max_decoder_positions = min(m.arch.max_target_positions for m in models)
        decoder = FastDecoder if kernels == "fast" else ExactDecoder
        self.decoders = [decoder(m) for m in models]
        self.encoders = [FastEncoder(m) if kernels == "fast" else m.encoder for m in models]
        # the search's top-2*beam candidates: the fast prefilter gives the same candidates, except
        # that among exactly tied scores it may pick or order another first (porting/NOTES.md)
        self.top_candidates = top_candidates if kernels == "fast" else torch.topk

    def encode(self, src_tokens: Tensor) -> list[EncoderOut]:
        return [encoder(src_tokens) for encoder in self.encoders]

    def for_beam(self, encs: list[EncoderOut], beam: int) -> list[EncoderOut]:
        """Encoder outputs as ``step`` wants them for `beam` rows per sentence."""
        return [d.for_beam(e, beam) for d, e in zip(self.decoders, encs)]

    def step(self, tokens: Tensor, encs: list[EncoderOut], caches: list[list[dict]]) -> Tensor:
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

    def step_candidates(self, tokens: Tensor, encs: list[EncoderOut], caches: list[list[dict]], prev_scores: Tensor | None,
                        beam: int, count: int, unkpen: float, ban_eos: bool) -> tuple[tuple[Tensor, Tensor] | None, Tensor | None]:
        """``step`` and the search's choice of candidates in one (``FastDecoder.candidates``; only where
        ``fuses_candidates``): ((scores, flat indices) [B, count], None), or (None, log-probs [N, V])
        where the kernel hands the step back. prev_scores [N] cumulative scores, None at step 0
        (one row per sentence then: all of a sentence's rows are equal)."""
        decoder, model = self.decoders[0], self.models[0]
        x = decoder.hidden(tokens, encs[0], caches[0])                    # [N, C]
        rows, group = (x, beam) if prev_scores is not None else (x[::beam], 1)
        found = decoder.candidates(rows, prev_scores, group, count, pad=PAD, unk=UNK, eos=EOS, unkpen=unkpen,
                                   ban_eos=ban_eos)
        return (found, None) if found is not None else (None, model.log_probs(decoder.logits(x)))

    def new_caches(self) -> list[list[dict]]:
        return [[{} for _ in m.decoder.layers] for m in self.models]

    def reorder_caches(self, caches: list[list[dict]], order: Tensor) -> None:
        for d, model_caches in zip(self.decoders, caches):
            d.reorder(model_caches, order)


def left_pad(rows: list[list[int]]) -> Tensor:
    """Id lists -> [B, S] padded on the left, as fairseq batches sources."""
    width = max(map(len, rows))
    out = torch.full((len(rows), width), PAD, dtype=torch.long)
    for r, ids in enumerate(rows):
        out[r, width - len(ids):] = torch.tensor(ids)
    return out


def _ban_repeated_ngrams(tokens: Tensor, lprobs: Tensor, step: int, n: int, mode: str) -> None:
    """In place. tokens: the whole [N, max_len + 2] buffer, as fairseq passes it."""
    if step + 2 - n < 0:
        return
    rows = tokens.tolist()
    for r, row in enumerate(rows):
        # fairseq's intent: the last n-1 generated tokens; fairseq main takes the buffer's tail (padding)
        current = row[step + 2 - n: step + 1] if mode == "correct" else row[-(n - 1):]
        banned = [row[i + n - 1] for i in range(step + 2 - n) if row[i:i + n - 1] == current]
        if banned:
            lprobs[r, torch.tensor(banned, dtype=torch.long)] = -math.inf


def generate(ensemble: Ensemble, src_tokens: Tensor, opts: GenerationOptions,
             encoder_outs: list[EncoderOut] | None = None) -> list[list[Hypothesis]]:
    """Every finalised hypothesis (``beam`` of them) for a batch of left-padded sources [B, S], best
    first. Like fairseq's generator, this ignores ``nbest``: callers keep the first ``nbest``.
    ``encoder_outs`` (from ``ensemble.encode(src_tokens)``) skips the encoder when already computed."""
    bsz, src_len = src_tokens.shape
    beam = opts.beam
    max_len = min(int(opts.max_len_a * src_len + opts.max_len_b), ensemble.max_decoder_positions - 1)
    if opts.min_len > max_len:
        raise ValueError(f"min_len {opts.min_len} is larger than max_len {max_len}")
    with torch.no_grad():
        # the encoder's output does not depend on generation options: callers may pass it in
        encs = encoder_outs if encoder_outs is not None else ensemble.encode(src_tokens)
        return _search(ensemble, encs, opts, bsz, beam, max_len)


def _search(ensemble, encs, opts, bsz, beam, max_len):
    encs = ensemble.for_beam(encs, beam)
    caches = ensemble.new_caches()
    scores = torch.zeros(bsz * beam, max_len + 1)                        # + 1 for </s>
    tokens = torch.full((bsz * beam, max_len + 2), PAD, dtype=torch.long)  # + 2 for </s> and the start
    tokens[:, 0] = EOS
    ignored = [[False] * beam for _ in range(bsz)]   # fairseq's cands_to_ignore: rows kept only to fill the beam
    finalized: list[list[dict]] = [[] for _ in range(bsz)]
    finished = [False] * bsz
    remaining = bsz
    cand_size = 2 * beam
    reorder_state = None
    vocab = ensemble.vocab_size
    # the candidates straight from the decoder's last states (porting/skinny_candidates.c); n-gram
    # bans need the log-probs
    fused = ensemble.fuses_candidates() and opts.no_repeat_ngram_size == 0

    for step in range(max_len + 1):  # one extra step for </s>
        if reorder_state is not None:
            ensemble.reorder_caches(caches, reorder_state)
        found, lprobs = None, None
        if fused and step < max_len:             # the last step allows only </s>: torch's path
            found, lprobs = ensemble.step_candidates(
                tokens[:, : step + 1], encs, caches, None if step == 0 else scores[:, step - 1], beam,
                min(cand_size, (1 if step == 0 else beam) * vocab - 1), opts.unkpen, step < opts.min_len)
        else:
            lprobs = ensemble.step(tokens[:, : step + 1], encs, caches)   # [N, V]
        if found is not None:
            cand_scores, cand_indices = found
        else:
            cand_scores, cand_indices = _top_candidates(ensemble, lprobs, tokens, scores, step, opts, bsz, beam,
                                                        max_len, cand_size)
        # The bookkeeping below is fairseq's, on Python lists: per candidate it is a few comparisons,
        # which cost ~10 us a step as lists and ~25 torch calls of 5-20 us each as tensors.
        flat, values = cand_indices.tolist(), cand_scores.tolist()      # [B][2 x beam]: beam row * V + token
        eos_rows, eos_values, stops = _ends(flat, values, ignored, beam, vocab)
        finalized_sents: list[int] = []
        if eos_rows:
            eos_bbsz_idx = torch.tensor(eos_rows)
            eos_scores = torch.tensor(eos_values, dtype=torch.float32)   # exact: the values are float32's
            if opts.early_stopping == "fairseq":
                finalized_sents = _finalize(step, eos_bbsz_idx, eos_scores, tokens, scores, finalized, finished,
                                            beam, max_len, opts.lenpen)
            else:
                _keep_best(step, eos_bbsz_idx, eos_scores, tokens, scores, finalized, finished, beam, opts.lenpen)
        if opts.early_stopping != "fairseq":
            finalized_sents = _transformers_done(step, cand_scores, cand_indices.fmod(vocab), finalized, finished,
                                                 beam, max_len, opts)
        remaining -= len(finalized_sents)
        if remaining == 0:
            break
        assert step < max_len, f"{step} < {max_len}"

        going_on = list(range(bsz))
        if finalized_sents:
            done = set(finalized_sents)
            going_on = [b for b in range(bsz) if b not in done]
            kept = torch.tensor(going_on)
            scores = scores.view(bsz, -1)[kept].view(len(going_on) * beam, -1)
            tokens = tokens.view(bsz, -1)[kept].view(len(going_on) * beam, -1)

        old_rows, new_rows, next_tokens, next_scores, ignored = _continue(going_on, stops, flat, values, beam, vocab)
        bsz = len(going_on)
        # whole rows: the columns after this step's are still <pad> (tokens) and 0 (scores) in every row
        new_rows = torch.tensor(new_rows)
        tokens, scores = tokens.index_select(0, new_rows), scores.index_select(0, new_rows)
        tokens[:, step + 1] = torch.tensor(next_tokens)
        scores[:, step] = torch.tensor(next_scores, dtype=torch.float32)
        reorder_state = torch.tensor(old_rows)

    out = []
    for sent in finalized:
        sent = [h for h in sent if h is not None]
        order = torch.sort(torch.tensor([float(h["score"].item()) for h in sent]), descending=True)[1]
        out.append([Hypothesis(sent[i]["tokens"].tolist(), float(sent[i]["score"]), sent[i]["positional_scores"].tolist())
                    for i in order])
    return out


def _ends(flat: list[list[int]], values: list[list[float]], ignored: list[list[bool]], beam: int,
          vocab: int) -> tuple[list[int], list[float], list[list[bool]]]:
    """Candidates ending in </s> with a finite score among each sentence's first `beam` that are not
    ignored are finalised: their rows (sentence * beam + beam row) and scores. Every candidate that
    ends, and every ignored one, stops: stops[sentence][candidate]."""
    eos_rows, eos_values, stops = [], [], []
    for b, (f_b, v_b, ignored_b) in enumerate(zip(flat, values, ignored)):
        stop = [f % vocab == EOS and v != -math.inf for f, v in zip(f_b, v_b)]
        for j in range(beam):
            if stop[j] and not ignored_b[j]:
                eos_rows.append(b * beam + f_b[j] // vocab)
                eos_values.append(v_b[j])
            stop[j] = stop[j] or ignored_b[j]
        stops.append(stop)
    return eos_rows, eos_values, stops


def _continue(going_on: list[int], stops: list[list[bool]], flat: list[list[int]], values: list[list[float]],
              beam: int, vocab: int) -> tuple[list[int], list[int], list[int], list[float], list[list[bool]]]:
    """Each sentence still going on continues with its `beam` best candidates that do not stop (if
    there are fewer, stopped ones fill the beam and are ignored from then on): fairseq's topk over
    stopped * 2 x beam + position, smallest first. Returns the rows followed in this step's batch
    (the caches') and in the batch without finished sentences (tokens' and scores'), the new
    tokens and cumulative scores, and the ignored flags."""
    old_rows, new_rows, next_tokens, next_scores, ignored = [], [], [], [], []
    for new_b, b in enumerate(going_on):
        stop, f_b = stops[b], flat[b]
        take = ([j for j, s in enumerate(stop) if not s] + [j for j, s in enumerate(stop) if s])[:beam]
        ignored.append([stop[j] for j in take])
        rows = [f_b[j] // vocab for j in take]
        old_rows += [b * beam + r for r in rows]
        new_rows += [new_b * beam + r for r in rows]
        next_tokens += [f_b[j] % vocab for j in take]
        next_scores += [values[b][j] for j in take]
    return old_rows, new_rows, next_tokens, next_scores, ignored


def _top_candidates(ensemble, lprobs, tokens, scores, step, opts, bsz, beam, max_len, cand_size) -> tuple[Tensor, Tensor]:
    """fairseq's rules on the step's log-probs [N, V] (in place), then the 2 x beam best cumulative
    scores per sentence: (scores, flat indices beam_row * V + token) [B, 2 x beam]."""
    vocab = lprobs.size(-1)
    # fairseq: lprobs[lprobs != lprobs] = -inf; the same values, without a [N, V] mask (~15x faster)
    torch.nan_to_num_(lprobs, nan=-math.inf, posinf=math.inf, neginf=-math.inf)
    lprobs[:, PAD] = -math.inf
    if opts.unkpen:                                                 # x - 0.0 is x: skip the call
        lprobs[:, UNK] -= opts.unkpen
    if step >= max_len:
        lprobs[:, :EOS] = -math.inf
        lprobs[:, EOS + 1:] = -math.inf
    if step < opts.min_len:
        lprobs[:, EOS] = -math.inf
    if opts.no_repeat_ngram_size > 0:
        _ban_repeated_ngrams(tokens, lprobs, step, opts.no_repeat_ngram_size, opts.ngram_blocking)

    # one search step: the 2*beam best continuations per sentence
    lp = lprobs.view(bsz, -1, vocab)
    if step == 0:
        lp = lp[:, ::beam, :].contiguous()                              # all rows are equal at step 0
    else:
        lp = lp.add_(scores.view(bsz, beam, -1)[:, :, step - 1].unsqueeze(-1))   # in place: lprobs is not read again
    flat = lp.view(bsz, -1)
    return ensemble.top_candidates(flat, min(cand_size, flat.size(1) - 1))


def _finalize(step, bbsz_idx, eos_scores, tokens, scores, finalized, finished, beam, max_len, lenpen) -> list[int]:
    """Record hypotheses ending in </s> at this step; returns the batch positions of sentences that
    are now done (fairseq's ``finalize_hypos``)."""
    tokens_clone, pos_scores = _ended(step, bbsz_idx, eos_scores, tokens, scores)
    eos_scores /= (step + 1) ** lenpen
    unfinished = [row // beam for row in bbsz_idx.tolist()]          # batch positions
    sents = _sentence_of(unfinished, finished)
    for i, sent in enumerate(sents):
        if len(finalized[sent]) < beam:
            finalized[sent].append({"tokens": tokens_clone[i], "score": eos_scores[i],
                                    "positional_scores": pos_scores[i]})
    newly = []
    for sent, position in sorted(set(zip(sents, unfinished))):       # fairseq: torch.unique, sorted
        if not finished[sent] and (len(finalized[sent]) == beam or step == max_len):
            finished[sent] = True
            newly.append(position)
    return newly


def _ended(step, bbsz_idx, eos_scores, tokens, scores) -> tuple[Tensor, Tensor]:
    """Token ids (leading </s> dropped, final </s> set) and per-position scores of hypotheses ending now."""
    tokens_clone = tokens.index_select(0, bbsz_idx)[:, 1: step + 2]
    tokens_clone[:, step] = EOS
    pos_scores = scores.index_select(0, bbsz_idx)[:, : step + 1]
    pos_scores[:, step] = eos_scores
    pos_scores[:, 1:] = pos_scores[:, 1:] - pos_scores[:, :-1]          # cumulative -> per position
    return tokens_clone, pos_scores


def _sentence_of(positions: list[int], finished: list[bool]) -> list[int]:
    """Batch positions of the shrunken batch -> original sentence numbers."""
    unfinished = [sent for sent, f in enumerate(finished) if not f]
    return [unfinished[p] for p in positions]


def _keep_best(step, bbsz_idx, eos_scores, tokens, scores, finalized, finished, beam, lenpen) -> None:
    """transformers' rule: an ended hypothesis joins the kept set if it is among the `beam` best."""
    tokens_clone, pos_scores = _ended(step, bbsz_idx, eos_scores, tokens, scores)
    eos_scores = eos_scores / (step + 1) ** lenpen
    for i, sent in enumerate(_sentence_of([row // beam for row in bbsz_idx.tolist()], finished)):
        kept = finalized[sent]
        kept.append({"tokens": tokens_clone[i], "score": eos_scores[i], "positional_scores": pos_scores[i]})
        kept.sort(key=lambda h: -float(h["score"]))   # stable: earlier (better-ranked) ones first on ties
        del kept[beam:]


def _transformers_done(step, cand_scores, cand_indices, finalized, finished, beam, max_len, opts) -> list[int]:
    """Batch positions of sentences that transformers' stopping rule ends after this step."""
    newly = []
    sents = _sentence_of(list(range(cand_scores.size(0))), finished)
    for pos, sent in enumerate(sents):
        kept = finalized[sent]
        if step == max_len:
            done = True
        elif len(kept) < beam:
            done = False
        elif opts.early_stopping == "true":
            done = True
        else:
            running = cand_scores[pos][cand_indices[pos] != EOS]   # best continuing hypothesis first
            length = max_len + 1 if opts.early_stopping == "never" and opts.lenpen > 0 else step + 1
            best = float(running[0]) / length ** opts.lenpen if running.numel() else -math.inf
            done = not best > min(float(h["score"]) for h in kept)
        if done:
            newly.append(pos)
    for pos in newly:
        finished[sents[pos]] = True
    return newly
