"""Beam search and greedy decoding as fairseq's ``SequenceGenerator`` does them, step by step.

Exact agreement with fairseq is possible only by reproducing its rules, not by re-deriving them:
  * 2 x beam candidates per sentence from one top-k over (beam x vocab) cumulative scores
    (at step 0 only the first beam row, since all rows are equal);
  * a candidate ending in </s> is finalised only if it ranks in the top `beam` candidates;
  * a sentence is done once `beam` hypotheses are finalised (not the best `beam`: the first), or at
    its max_len, where everything but </s> is masked;
  * finalised scores are cumulative log-probs (</s> included) / (length incl. </s>) ** lenpen;
  * max_len = min(int(max_len_a * x + max_len_b), max positions - 1), where fairseq takes x to be
    the batch's padded width; by default x is each sentence's own length (</s> included), as
    fairseq documents it, so that no output depends on its batch (options.max_len_from);
  * </s> is masked while step < min_len; <pad> is never chosen; unkpen is subtracted from <unk>;
  * ensembles average probabilities: logsumexp over the models' log-probs minus log(N);
  * a multilingual model's language token (porting.format.LanguageTokens) is either the decoder's
    start token in place of </s>, or forced as the first generated token as fairseq's
    ``prefix_tokens`` are: every other token masked, its own log-prob kept (so it counts in the
    score and the length), and min_len not applied on that step;
  * the token that ends a hypothesis is the generator's eos: </s>, or an mBART model's target language
    token (translation_from_pretrained_bart builds its generator with that eos), </s> then being an
    ordinary token. Every rule above that names </s> means that end token (``DecoderStart.end``).
Greedy decoding is this search with beam 1, as in fairseq.
For one model on the fast kernels, with fairseq's stopping rule and no n-gram blocking, the same loop
runs in C (porting/kernels/skinny_search.c, ``_search_natively``); this file's loop is its reference.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from porting.format import EOS, PAD, UNK, DecoderStart
from porting.generation.ensemble import Ensemble
from porting.generation.options import GenerationOptions
from porting.generation.results import Hypothesis, best_first
from porting.generation.results import length_limits as limits_for
from porting.model.transformer import EncoderOut


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


@dataclass
class Ended:
    """A finalised hypothesis as the search keeps it (fairseq's ``finalized`` entries), its values
    read out of the float32 tensors they were computed in (a Python float holds a float32 exactly)."""
    tokens: list[int]                 # ending with </s>
    score: float                      # normalised score
    positional_scores: list[float]


@dataclass
class BeamState:
    """What the search carries from one step to the next (fairseq's SequenceGenerator locals).

    Rows are sentence * beam + beam row over the sentences still going on (`bsz` of them);
    ``finalized`` and ``finished`` are indexed by the batch's original sentence numbers."""
    beam: int
    max_len: int                      # the largest of the sentences' limits: the buffers' size
    limits: list[int]                 # each sentence's max_len (by original sentence number)
    bsz: int
    tokens: Tensor                    # [bsz * beam, max_len + 2]: the start </s>, then the tokens so far, <pad>
    scores: Tensor                    # [bsz * beam, max_len + 1]: cumulative scores, 0 after the step
    ignored: list[list[bool]]         # fairseq's cands_to_ignore: rows kept only to fill the beam
    finalized: list[list[Ended]]
    finished: list[bool]
    # the rows the caches must follow before the next step (the decoders apply it: FastDecoder
    # folds it into porting/kernels/skinny.c's cache copy), None at the first step
    pending_order: Tensor | None = None
    prefix: tuple[int, ...] = ()      # tokens forced as the first generated ones (fairseq's prefix_tokens)
    end: int = EOS                    # the token that ends a hypothesis (the generator's eos)

    @classmethod
    def start(cls, beam: int, limits: list[int], bos: int = EOS, prefix: tuple[int, ...] = (),
              end: int = EOS) -> "BeamState":
        bsz, max_len = len(limits), max(limits)
        tokens = torch.full((bsz * beam, max_len + 2), PAD, dtype=torch.long)   # + 2 for </s> and the start
        tokens[:, 0] = bos
        return cls(beam, max_len, list(limits), bsz, tokens, torch.zeros(bsz * beam, max_len + 1),   # + 1 for </s>
                   [[False] * beam for _ in range(bsz)], [[] for _ in range(bsz)], [False] * bsz, prefix=tuple(prefix),
                   end=end)

    def at_limit(self, step: int) -> list[int]:
        """Batch positions of the sentences going on whose last step this is (only </s> allowed)."""
        if step < min(self.limits):                  # the common case, without a walk over the batch
            return []
        return [p for p, sent in enumerate(self.sentence_of(list(range(self.bsz)))) if self.limits[sent] == step]

    def forced(self, step: int, at_limit: list[int]) -> Tensor | None:
        """The token each sentence going on must take at this step, [bsz] (-1: none): </s> at its max_len,
        else the prefix's token (fairseq's prefix_tokens); None where no sentence has one."""
        if not at_limit and step >= len(self.prefix):
            return None
        out = torch.full((self.bsz,), self.prefix[step] if step < len(self.prefix) else -1, dtype=torch.long)
        if at_limit:
            out[torch.tensor(at_limit)] = self.end
        return out

    def sentence_of(self, positions: list[int]) -> list[int]:
        """Batch positions of the shrunken batch -> original sentence numbers."""
        unfinished = [sent for sent, f in enumerate(self.finished) if not f]
        return [unfinished[p] for p in positions]

    def ended(self, step: int, rows: Tensor, eos_scores: Tensor) -> tuple[Tensor, Tensor]:
        """Token ids (leading </s> dropped, final </s> set) and per-position scores of hypotheses
        ending now in these rows."""
        tokens = self.tokens.index_select(0, rows)[:, 1: step + 2]
        tokens[:, step] = self.end
        pos_scores = self.scores.index_select(0, rows)[:, : step + 1]
        pos_scores[:, step] = eos_scores
        pos_scores[:, 1:] = pos_scores[:, 1:] - pos_scores[:, :-1]          # cumulative -> per position
        return tokens, pos_scores

    def drop(self, going_on: list[int]) -> None:
        """Keep only the sentences at these batch positions."""
        kept = torch.tensor(going_on)
        self.scores = self.scores.view(self.bsz, -1)[kept].view(len(going_on) * self.beam, -1)
        self.tokens = self.tokens.view(self.bsz, -1)[kept].view(len(going_on) * self.beam, -1)

    def follow(self, step: int, old_rows: list[int], new_rows: list[int], next_tokens: list[int],
               next_scores: list[float], ignored: list[list[bool]]) -> None:
        """Continue each row from the row it follows with its next token and score."""
        # one tensor for the rows and tokens (a torch call costs more than its few values here): [2, N]
        rows, tokens = torch.tensor([new_rows, next_tokens])
        # whole rows: the columns after this step's are still <pad> (tokens) and 0 (scores) in every row
        self.tokens, self.scores = self.tokens.index_select(0, rows), self.scores.index_select(0, rows)
        self.tokens[:, step + 1] = tokens
        self.scores[:, step] = torch.tensor(next_scores, dtype=torch.float32)
        self.bsz = len(ignored)
        self.ignored = ignored
        # the same rows in the caches' batch unless sentences left it in this step
        self.pending_order = rows if old_rows == new_rows else torch.tensor(old_rows)

    def hypotheses(self) -> list[list[Hypothesis]]:
        out = []
        for sent in self.finalized:
            order = best_first([h.score for h in sent])
            out.append([Hypothesis(sent[i].tokens, sent[i].score, sent[i].positional_scores) for i in order])
        return out


def generate(ensemble: Ensemble, src_tokens: Tensor, opts: GenerationOptions,
             encoder_outs: list[EncoderOut] | None = None,
             start: DecoderStart = DecoderStart()) -> list[list[Hypothesis]]:
    """Every finalised hypothesis (``beam`` of them) for a batch of left-padded sources [B, S], best
    first. Like fairseq's generator, this ignores ``nbest``: callers keep the first ``nbest``.
    ``encoder_outs`` (from ``ensemble.encode(src_tokens)``) skips the encoder when already computed.
    ``start``: the decoder's first input token, the tokens forced first and the end token (a
    tokenizer's ``bos``, ``prefix`` and ``end``: a multilingual model's language token, mBART's)."""
    start = DecoderStart(*start)
    limits = length_limits(src_tokens, opts, ensemble.max_decoder_positions)
    with torch.no_grad():
        # the encoder's output does not depend on generation options: callers may pass it in
        encs = encoder_outs if encoder_outs is not None else ensemble.encode(src_tokens)
        state = BeamState.start(opts.beam, limits, *start)
        if not _search_natively(ensemble, encs, opts, state, start):
            _search(ensemble, ensemble.for_beam(encs, opts.beam), opts, state)
        return state.hypotheses()


def length_limits(src_tokens: Tensor, opts: GenerationOptions, max_positions: int) -> list[int]:
    """Each sentence's max_len for src_tokens [B, S] (porting.generation.results.length_limits)."""
    return limits_for(src_tokens.ne(PAD).sum(1).tolist(), src_tokens.size(1), opts, max_positions)


def _search_natively(ensemble: Ensemble, encs: list[EncoderOut], opts: GenerationOptions, state: BeamState,
                     start: DecoderStart) -> bool:
    """``_search`` in one native call where it runs (``Ensemble.search``: one model on the fast kernels,
    fairseq's stopping rule, no n-gram blocking); False where it does not, or a step must be decided by
    torch's path (``_search`` then runs from the start). Its hypotheses and scores are bitwise
    ``_search``'s on the same kernels (tests/test_native_search.py)."""
    if opts.early_stopping != "fairseq" or opts.no_repeat_ngram_size:
        return False
    found = ensemble.search(encs, state.beam, state.limits, opts.min_len, opts.unkpen, start)
    if found is None:
        return False
    for sent, hypotheses in enumerate(found):
        # grouped by length: one normalisation per length, as _finalize makes one per step
        by_length: dict[int, list[int]] = {}
        for h, (tokens, _, _) in enumerate(hypotheses):
            by_length.setdefault(len(tokens), []).append(h)
        scores = [0.0] * len(hypotheses)
        for length, which in by_length.items():
            cumulative = torch.tensor([hypotheses[h][1] for h in which], dtype=torch.float32)
            for h, score in zip(which, normalised(cumulative, length, opts.lenpen).tolist()):
                scores[h] = score
        state.finalized[sent] = [Ended(tokens, score, positional) for (tokens, _, positional), score in zip(hypotheses, scores)]
        state.finished[sent] = True
    return True


def _search(ensemble: Ensemble, encs: list[EncoderOut], opts: GenerationOptions, state: BeamState) -> None:
    """Steps until every sentence is finished: choose candidates, end some, continue the rest.
    The bookkeeping is fairseq's, on Python lists: per candidate it is a few comparisons, which
    cost ~10 us a step as lists and ~25 torch calls of 5-20 us each as tensors."""
    caches = ensemble.new_caches()
    vocab = ensemble.vocab_size
    remaining = state.bsz
    # the candidates straight from the decoder's last states (porting/kernels/skinny_candidates.c);
    # n-gram bans need the log-probs
    fused = ensemble.fuses_candidates() and opts.no_repeat_ngram_size == 0
    for step in range(state.max_len + 1):  # one extra step for </s>
        if state.pending_order is not None:
            ensemble.reorder_caches(caches, state.pending_order)
        at_limit = state.at_limit(step)
        cand_scores, cand_indices = _step(ensemble, encs, caches, state, step, opts, fused, at_limit)
        flat, values = cand_indices.tolist(), cand_scores.tolist()      # [B][2 x beam]: beam row * V + token
        eos_rows, eos_values, stops = _ends(flat, values, state.ignored, state.beam, vocab, state.end)
        cand_tokens = None if opts.early_stopping == "fairseq" else cand_indices.fmod(vocab)   # only its rule reads them
        finalized_sents = _end(state, step, eos_rows, eos_values, cand_scores, cand_tokens, opts)
        remaining -= len(finalized_sents)
        if remaining == 0:
            break
        assert step < state.max_len, f"{step} < {state.max_len}"
        going_on = list(range(state.bsz))
        if finalized_sents:
            done = set(finalized_sents)
            going_on = [b for b in range(state.bsz) if b not in done]
            state.drop(going_on)
        state.follow(step, *_continue(going_on, stops, flat, values, state.beam, vocab))


def _step(ensemble: Ensemble, encs: list[EncoderOut], caches, state: BeamState, step: int,
          opts: GenerationOptions, fused: bool, at_limit: list[int]) -> tuple[Tensor, Tensor]:
    """One decoder step and the 2 x beam best candidates per sentence: (scores, flat indices
    beam_row * V + token) [B, 2 x beam]. at_limit: the batch positions allowed only </s>."""
    beam, vocab = state.beam, ensemble.vocab_size
    tokens = state.tokens[:, : step + 1]
    if fused:
        found, lprobs = ensemble.step_candidates(
            tokens, encs, caches, None if step == 0 else state.scores[:, step - 1], beam,
            min(2 * beam, (1 if step == 0 else beam) * vocab - 1), opts.unkpen, step < opts.min_len, state.end,
            state.forced(step, at_limit))
        if found is not None:
            return found
    else:
        lprobs = ensemble.step(tokens, encs, caches)   # [N, V]
    return _top_candidates(ensemble, lprobs, state, step, opts, at_limit)


def _end(state: BeamState, step: int, eos_rows: list[int], eos_values: list[float], cand_scores: Tensor,
         cand_tokens: Tensor | None, opts: GenerationOptions) -> list[int]:
    """Finalise the hypotheses ending here; returns the batch positions of sentences now done."""
    finalized_sents: list[int] = []
    if eos_rows:
        rows = torch.tensor(eos_rows)
        eos_scores = torch.tensor(eos_values, dtype=torch.float32)   # exact: the values are float32's
        if opts.early_stopping == "fairseq":
            finalized_sents = _finalize(state, step, rows, eos_scores, opts.lenpen)
        else:
            _keep_best(state, step, rows, eos_scores, opts.lenpen)
    if opts.early_stopping != "fairseq":
        finalized_sents = _transformers_done(state, step, cand_scores, cand_tokens, opts)
    return finalized_sents


def _ends(flat: list[list[int]], values: list[list[float]], ignored: list[list[bool]], beam: int,
          vocab: int, end: int) -> tuple[list[int], list[float], list[list[bool]]]:
    """Candidates ending in the end token (</s>) with a finite score among each sentence's first `beam` that are not
    ignored are finalised: their rows (sentence * beam + beam row) and scores. Every candidate that
    ends, and every ignored one, stops: stops[sentence][candidate]."""
    eos_rows, eos_values, stops = [], [], []
    for b, (f_b, v_b, ignored_b) in enumerate(zip(flat, values, ignored)):
        stop = [f % vocab == end and v != -math.inf for f, v in zip(f_b, v_b)]
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


def _top_candidates(ensemble: Ensemble, lprobs: Tensor, state: BeamState, step: int,
                    opts: GenerationOptions, at_limit: list[int]) -> tuple[Tensor, Tensor]:
    """fairseq's rules on the step's log-probs [N, V] (in place), then the 2 x beam best cumulative
    scores per sentence: (scores, flat indices beam_row * V + token) [B, 2 x beam]."""
    vocab = lprobs.size(-1)
    # fairseq: lprobs[lprobs != lprobs] = -inf; the same values, without a [N, V] mask (~15x faster)
    torch.nan_to_num_(lprobs, nan=-math.inf, posinf=math.inf, neginf=-math.inf)
    lprobs[:, PAD] = -math.inf
    if opts.unkpen:                                                 # x - 0.0 is x: skip the call
        lprobs[:, UNK] -= opts.unkpen
    if at_limit:
        ended = torch.tensor(at_limit)
        per_sentence = lprobs.view(state.bsz, state.beam, vocab)       # [B, beam, V], in place
        per_sentence[ended, :, :state.end] = -math.inf
        per_sentence[ended, :, state.end + 1:] = -math.inf
    if step < len(state.prefix):
        _force(lprobs, state, state.prefix[step], at_limit)
    elif step < opts.min_len:                                       # fairseq: not on a forced step
        lprobs[:, state.end] = -math.inf
    if opts.no_repeat_ngram_size > 0:
        _ban_repeated_ngrams(state.tokens, lprobs, step, opts.no_repeat_ngram_size, opts.ngram_blocking)

    # one search step: the 2*beam best continuations per sentence
    bsz, beam = state.bsz, state.beam
    lp = lprobs.view(bsz, -1, vocab)
    if step == 0:
        lp = lp[:, ::beam, :].contiguous()                              # all rows are equal at step 0
    else:
        lp = lp.add_(state.scores.view(bsz, beam, -1)[:, :, step - 1].unsqueeze(-1))   # in place: not read again
    flat = lp.view(bsz, -1)
    return ensemble.top_candidates(flat, min(2 * beam, flat.size(1) - 1))


def _force(lprobs: Tensor, state: BeamState, token: int, at_limit: list[int]) -> None:
    """fairseq's _prefix_tokens, in place on [N, V]: every row but those of sentences at their limit
    may continue only with `token`, at its own log-prob."""
    rows = torch.ones(state.bsz, state.beam, dtype=torch.bool)
    if at_limit:
        rows[torch.tensor(at_limit)] = False
    rows = rows.view(-1)                                            # [B, beam] -> [N]
    kept = lprobs[rows, token].clone()
    lprobs[rows] = -math.inf
    lprobs[rows, token] = kept


def normalised(cumulative: Tensor, length: int, lenpen: float) -> Tensor:
    """Finalised scores: float32 cumulative log-probs / length ** lenpen (a Python float), as fairseq divides."""
    return cumulative / length ** lenpen


def _finalize(state: BeamState, step: int, rows: Tensor, eos_scores: Tensor, lenpen: float) -> list[int]:
    """Record hypotheses ending in </s> at this step; returns the batch positions of sentences that
    are now done (fairseq's ``finalize_hypos``)."""
    tokens, pos_scores = state.ended(step, rows, eos_scores)
    eos_scores = normalised(eos_scores, step + 1, lenpen)
    unfinished = [row // state.beam for row in rows.tolist()]          # batch positions
    sents = state.sentence_of(unfinished)
    for sent, *ended in zip(sents, tokens.tolist(), eos_scores.tolist(), pos_scores.tolist()):
        if len(state.finalized[sent]) < state.beam:
            state.finalized[sent].append(Ended(*ended))
    newly = []
    for sent, position in sorted(set(zip(sents, unfinished))):       # fairseq: torch.unique, sorted
        if not state.finished[sent] and (len(state.finalized[sent]) == state.beam or step == state.limits[sent]):
            state.finished[sent] = True
            newly.append(position)
    return newly


def _keep_best(state: BeamState, step: int, rows: Tensor, eos_scores: Tensor, lenpen: float) -> None:
    """transformers' rule: an ended hypothesis joins the kept set if it is among the `beam` best."""
    tokens, pos_scores = state.ended(step, rows, eos_scores)
    eos_scores = normalised(eos_scores, step + 1, lenpen)
    sents = state.sentence_of([row // state.beam for row in rows.tolist()])
    for sent, *ended in zip(sents, tokens.tolist(), eos_scores.tolist(), pos_scores.tolist()):
        kept = state.finalized[sent]
        kept.append(Ended(*ended))
        kept.sort(key=lambda h: -h.score)   # stable: earlier (better-ranked) ones first on ties
        del kept[state.beam:]


def _transformers_done(state: BeamState, step: int, cand_scores: Tensor, cand_tokens: Tensor,
                       opts: GenerationOptions) -> list[int]:
    """Batch positions of sentences that transformers' stopping rule ends after this step."""
    newly = []
    sents = state.sentence_of(list(range(cand_scores.size(0))))
    for pos, sent in enumerate(sents):
        kept = state.finalized[sent]
        if step == state.limits[sent]:
            done = True
        elif len(kept) < state.beam:
            done = False
        elif opts.early_stopping == "true":
            done = True
        else:
            running = cand_scores[pos][cand_tokens[pos] != state.end]   # best continuing hypothesis first
            length = state.limits[sent] + 1 if opts.early_stopping == "never" and opts.lenpen > 0 else step + 1
            best = float(running[0]) / length ** opts.lenpen if running.numel() else -math.inf
            done = not best > min(h.score for h in kept)
        if done:
            newly.append(pos)
    for pos in newly:
        state.finished[sents[pos]] = True
    return newly
