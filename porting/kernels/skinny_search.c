/* The beam search's loop for one model in one call (porting/kernels/native.py's ``Search``): every
 * step's embedding, decoder layers and fused candidates (skinny.c, skinny_candidates.c) and fairseq's
 * bookkeeping between them, as porting/generation/beam.py's ``_search`` does it on the same kernels.
 *
 * Why by hand: at batch 1 on a small model a step's arithmetic takes ~0.19 ms in those kernels, and the
 * Python around them (the search's lists, tensors made and read, the calls) took ~0.1-0.2 ms more:
 * CTranslate2 runs its loop in C++. beam.py stays the reference this is tested against: on the same
 * kernels both give bitwise the same hypotheses and scores (tests/test_native_search.py).
 *
 * What it covers: fairseq's stopping rule, no n-gram blocking, one model whose decoder step runs
 * whole in the kernels (porting/kernels/fast_decoder.py's ``FastDecoder.search``). Scores are left
 * cumulative: the caller divides by length ** lenpen (as beam.py does, in torch), which changes no
 * choice made here (fairseq keeps the first `beam` hypotheses that end, not the best).
 *
 * Rows are sentence position * beam + beam row over the sentences still going on; sentences that
 * finish leave (their encoder keys are compacted in place), as in beam.py. */
#include <stdint.h>

#include "skinny_tiles.h"

/* What the loop needs of the decoder. Field order matters: porting/kernels/native.py's _Decoder
 * mirrors it, and checks the mirror against skinny_search_abi when it loads. */
struct decoder {
    const struct layer *layers;
    const float *embed;             /* [vocab, c] */
    const float *positions;         /* [position_rows, c]: row pad + t + 1 at step t */
    const float *out_w, *out_b;     /* the output projection's panels and padded bias (or NULL) */
    const float *norm_w, *norm_b;   /* the decoder's final layer norm (or NULL: none) */
    const float *embed_norm_w, *embed_norm_b;   /* the embedding's layer norm (BART's; or NULL: none) */
    int count, vocab, c, heads, position_rows, pad, unk;
    float scale, norm_eps, embed_norm_eps;
};

#define SEARCH_ABI_FIELDS 19
int skinny_search_abi(int64_t *out)
{
    const size_t offsets[SEARCH_ABI_FIELDS] = {
        offsetof(struct decoder, layers), offsetof(struct decoder, embed), offsetof(struct decoder, positions),
        offsetof(struct decoder, out_w), offsetof(struct decoder, out_b), offsetof(struct decoder, norm_w),
        offsetof(struct decoder, norm_b), offsetof(struct decoder, embed_norm_w), offsetof(struct decoder, embed_norm_b),
        offsetof(struct decoder, count), offsetof(struct decoder, vocab),
        offsetof(struct decoder, c), offsetof(struct decoder, heads), offsetof(struct decoder, position_rows),
        offsetof(struct decoder, pad), offsetof(struct decoder, unk), offsetof(struct decoder, scale),
        offsetof(struct decoder, norm_eps), offsetof(struct decoder, embed_norm_eps)};
    out[0] = (int64_t)sizeof(struct decoder);
    for (int i = 0; i < SEARCH_ABI_FIELDS; i++)
        out[i + 1] = (int64_t)offsets[i];
    return SEARCH_ABI_FIELDS + 1;
}

/* The search's state between steps (beam.py's BeamState), buffers sized for the first step's rows. */
struct state {
    int beam, bsz, max_len, count;  /* count: candidates per sentence this step */
    int64_t *tokens, *next_tokens;  /* [rows, max_len + 2]: the start token, the tokens so far, <pad> */
    float *scores, *next_scores;    /* [rows, max_len + 1]: cumulative scores, 0 after the step */
    uint8_t *ignored, *next_ignored;/* [rows]: fairseq's cands_to_ignore, by candidate position */
    int *sentence;                  /* [bsz]: position -> the caller's sentence number */
    int64_t *order;                 /* [rows]: the old row each row follows (the caches' reordering) */
    float *cand_score;              /* [bsz, count] */
    int64_t *cand_index;
    uint8_t *stop, *done;           /* [bsz, count], [bsz] */
    int64_t *forced;                /* [bsz] */
};

struct results {                    /* per caller's sentence s, hypothesis h (in the order they end) */
    int64_t *tokens;                /* [sentences, beam, max_len + 1] */
    float *positional, *scores;     /* [sentences, beam, max_len + 1]; [sentences, beam]: cumulative */
    int *lengths, *counts;          /* [sentences, beam]; [sentences] */
};

/* A buffer of at least `floats` floats: the one held where it is large enough, else a new one of exactly
 * that size (the caches grow by a step's keys and values each step: a margin would raise the peak
 * memory above the step-by-step path's, which holds the old and the new cache and no more); 0, or -1
 * when memory cannot be had. */
static int reserve(float **buffer, size_t *capacity, size_t floats)
{
    if (floats <= *capacity)
        return 0;
    free(*buffer);
    *buffer = malloc(sizeof(float) * floats);
    *capacity = *buffer ? floats : 0;
    return *buffer ? 0 : -1;
}

/* Record the hypotheses ending at this step (beam.py's _ends and _finalize); marks done[p] for the
 * sentence positions now finished and returns how many. */
static int finalize(struct state *S, struct results *R, const int *limits, int step, int vocab, int end)
{
    const int beam = S->beam, width = S->max_len + 1, stride = S->max_len + 2;
    int newly = 0;
    for (int p = 0; p < S->bsz; p++) {
        const float *v = S->cand_score + (size_t)p * S->count;
        const int64_t *f = S->cand_index + (size_t)p * S->count;
        uint8_t *stop = S->stop + (size_t)p * S->count;
        const int sent = S->sentence[p];
        int ended = 0;
        for (int j = 0; j < S->count; j++)
            stop[j] = f[j] % vocab == end && v[j] != -__builtin_inff();
        for (int j = 0; j < beam && j < S->count; j++) {
            const uint8_t ignored = S->ignored[(size_t)p * beam + j];
            if (stop[j] && !ignored) {
                ended = 1;
                if (R->counts[sent] < beam) {                  /* fairseq keeps the first `beam` */
                    const size_t row = (size_t)p * beam + (size_t)(f[j] / vocab);
                    const size_t h = (size_t)sent * beam + (size_t)R->counts[sent]++;
                    const int64_t *tokens = S->tokens + row * stride;
                    const float *cum = S->scores + row * width;
                    int64_t *out = R->tokens + h * width;
                    float *pos = R->positional + h * width;
                    for (int i = 0; i < step; i++)
                        out[i] = tokens[i + 1];
                    out[step] = end;
                    float before = 0.f;                           /* cumulative -> per position */
                    for (int i = 0; i <= step; i++) {
                        const float now = i == step ? v[j] : cum[i];
                        pos[i] = i ? now - before : now;
                        before = now;
                    }
                    R->scores[h] = v[j];
                    R->lengths[h] = step + 1;
                }
            }
            stop[j] = stop[j] || ignored;
        }
        S->done[p] = ended && (R->counts[sent] == beam || step == limits[sent]);
        newly += S->done[p];
    }
    return newly;
}

/* Each sentence going on continues with its `beam` best candidates that do not stop, stopped ones
 * filling the beam and ignored from then on (beam.py's _continue and follow); finished sentences
 * leave, their encoder keys with them. */
static void advance(struct state *S, int step, int vocab, float *const *enc_k, float *const *enc_v, float *enc_mask,
                    int layers, size_t key_cell, int src_len)
{
    const int beam = S->beam, width = S->max_len + 1, stride = S->max_len + 2;
    int kept = 0;
    for (int p = 0; p < S->bsz; p++) {
        if (S->done[p])
            continue;
        const uint8_t *stop = S->stop + (size_t)p * S->count;
        int taken = 0;
        for (int pass = 0; pass < 2; pass++)                       /* not stopped first, then stopped */
            for (int j = 0; j < S->count && taken < beam; j++) {
                if (stop[j] != pass)
                    continue;
                const int64_t flat = S->cand_index[(size_t)p * S->count + j];
                const size_t old = (size_t)p * beam + (size_t)(flat / vocab), row = (size_t)kept * beam + taken++;
                S->order[row] = (int64_t)old;
                S->next_ignored[row] = stop[j];
                memcpy(S->next_tokens + row * stride, S->tokens + old * stride, sizeof(int64_t) * stride);
                memcpy(S->next_scores + row * width, S->scores + old * width, sizeof(float) * width);
                S->next_tokens[row * stride + step + 1] = flat % vocab;
                S->next_scores[row * width + step] = S->cand_score[(size_t)p * S->count + j];
            }
        if (kept != p) {                                            /* kept < p: moves down, in place */
            for (int i = 0; i < layers; i++) {
                memmove(enc_k[i] + kept * key_cell, enc_k[i] + p * key_cell, sizeof(float) * key_cell);
                memmove(enc_v[i] + kept * key_cell, enc_v[i] + p * key_cell, sizeof(float) * key_cell);
            }
            if (enc_mask)
                memmove(enc_mask + (size_t)kept * src_len, enc_mask + (size_t)p * src_len, sizeof(float) * src_len);
        }
        S->sentence[kept++] = S->sentence[p];
    }
    S->bsz = kept;
    int64_t *t = S->tokens; S->tokens = S->next_tokens; S->next_tokens = t;
    float *s = S->scores; S->scores = S->next_scores; S->next_scores = s;
    uint8_t *g = S->ignored; S->ignored = S->next_ignored; S->next_ignored = g;
}

/* The whole search (see the top). enc_k[i], enc_v[i]: layer i's encoder keys and values [sentences,
 * heads, src_len, d], and enc_mask additive [sentences, src_len] (or NULL): overwritten (compacted as
 * sentences finish). limits [sentences]: each sentence's max_len; prefix [prefix_len]: tokens forced
 * first. Results: each sentence's hypotheses in the order they ended, tokens (ending with `end`) and
 * per-position scores [sentences, beam, max(limits) + 1], cumulative scores, lengths, counts.
 * Returns 0; 1 where a step must be decided by torch's path (a NaN or infinite logit, too few finite
 * candidates: the caller runs beam.py's search instead); -1 (no memory), -2 (a position beyond the
 * table, a token outside the vocabulary), -3 (an activation without a case), -4 (a sentence still
 * going at its max_len: a broken invariant). */
int skinny_search(const struct decoder *D, float *const *enc_k, float *const *enc_v, float *enc_mask, int sentences,
                  int src_len, int beam, const int *limits, int min_len, float unkpen, int bos, int end,
                  const int64_t *prefix, int prefix_len, int64_t *out_tokens, float *out_positional,
                  float *out_scores, int *out_lengths, int *out_counts, void *gomp, void *thread_num, int threads)
{
    int max_len = 0;
    for (int s = 0; s < sentences; s++)
        max_len = limits[s] > max_len ? limits[s] : max_len;
    if (D->pad + max_len + 1 >= D->position_rows || max_len < 0)
        return -2;
    const int rows = sentences * beam, c = D->c, stride = max_len + 2, width = max_len + 1, most = 2 * beam;
    const size_t key_cell = (size_t)src_len * c;                     /* a sentence's keys: heads x src_len x d */
    struct results R = {out_tokens, out_positional, out_scores, out_lengths, out_counts};
    struct state S = {beam, sentences, max_len, 0};
    float *kv[2] = {NULL, NULL}, *x, *prev;
    size_t capacity[2] = {0, 0};
    int64_t *inputs;
    void *owned[16];
    int held = 0, status = 0;
#define TAKE(p, bytes) (owned[held++] = (p) = malloc(bytes))
    TAKE(S.tokens, sizeof(int64_t) * (size_t)rows * stride);
    TAKE(S.next_tokens, sizeof(int64_t) * (size_t)rows * stride);
    TAKE(S.scores, sizeof(float) * (size_t)rows * width);
    TAKE(S.next_scores, sizeof(float) * (size_t)rows * width);
    TAKE(S.ignored, (size_t)rows);
    TAKE(S.next_ignored, (size_t)rows);
    TAKE(S.sentence, sizeof(int) * (size_t)sentences);
    TAKE(S.order, sizeof(int64_t) * (size_t)rows);
    TAKE(S.cand_score, sizeof(float) * (size_t)sentences * most);
    TAKE(S.cand_index, sizeof(int64_t) * (size_t)sentences * most);
    TAKE(S.stop, (size_t)sentences * most);
    TAKE(S.done, (size_t)sentences);
    TAKE(S.forced, sizeof(int64_t) * (size_t)sentences);
    TAKE(x, sizeof(float) * (size_t)rows * c);
    TAKE(prev, sizeof(float) * (size_t)rows);
    TAKE(inputs, sizeof(int64_t) * (size_t)rows);
#undef TAKE
    for (int i = 0; i < held; i++)
        if (!owned[i])
            status = -1;
    if (status)
        goto out;
    for (size_t i = 0; i < (size_t)rows * stride; i++)
        S.tokens[i] = i % stride ? D->pad : bos;
    memset(S.scores, 0, sizeof(float) * (size_t)rows * width);
    memset(S.ignored, 0, (size_t)rows);
    for (int s = 0; s < sentences; s++) {
        S.sentence[s] = s;
        out_counts[s] = 0;
    }
    int remaining = sentences, n_old = rows;
    for (int step = 0; step <= max_len; step++) {
        const int n = S.bsz * beam;
        for (int r = 0; r < n; r++)
            inputs[r] = S.tokens[(size_t)r * stride + step];
        if (skinny_embed(inputs, n, D->embed, D->vocab, c, D->scale, D->positions + (size_t)(D->pad + step + 1) * c, x)) {
            status = -2;
            break;
        }
        if (D->embed_norm_w)
            skinny_layer_norm(x, x, n, c, D->embed_norm_w, D->embed_norm_b, D->embed_norm_eps);
        const size_t cells = (size_t)D->count * n * (step + 1) * 2 * c;   /* [count, 2, n, heads, step + 1, d] */
        if (reserve(&kv[1], &capacity[1], cells)) {
            status = -1;
            break;
        }
        status = skinny_decoder_layers(D->layers, D->count, x, n, step, step ? kv[0] : NULL, n_old, step ? S.order : NULL,
                                       kv[1], (const float *const *)enc_k, (const float *const *)enc_v, enc_mask, S.bsz,
                                       src_len, gomp, thread_num, threads);
        if (status)
            break;
        float *k = kv[0]; kv[0] = kv[1]; kv[1] = k;
        size_t cap = capacity[0]; capacity[0] = capacity[1]; capacity[1] = cap;
        if (D->norm_w)
            skinny_layer_norm(x, x, n, c, D->norm_w, D->norm_b, D->norm_eps);

        /* candidates: at step 0 one row per sentence (its rows are equal), after that every row */
        int any_forced = 0;
        for (int p = 0; p < S.bsz; p++) {
            S.forced[p] = limits[S.sentence[p]] == step ? end : step < prefix_len ? prefix[step] : -1;
            any_forced |= S.forced[p] >= 0;
        }
        const int group = step ? beam : 1, candidates = group * D->vocab - 1 < most ? group * D->vocab - 1 : most;
        if (!step)
            for (int p = 1; p < S.bsz; p++)                         /* x[::beam], in place: p * beam >= p */
                memmove(x + (size_t)p * c, x + (size_t)p * beam * c, sizeof(float) * c);
        for (int r = 0; step && r < n; r++)
            prev[r] = S.scores[(size_t)r * width + step - 1];
        S.count = candidates;
        status = skinny_candidates(x, D->out_w, D->out_b, step ? n : S.bsz, c, D->vocab, step ? prev : NULL, group,
                                   candidates, D->pad, D->unk, end, unkpen, step < min_len,
                                   any_forced ? S.forced : NULL, S.cand_score, S.cand_index, gomp, thread_num, threads);
        if (status)
            break;
        remaining -= finalize(&S, &R, limits, step, D->vocab, end);
        if (!remaining)
            break;
        if (step == max_len) {
            status = -4;
            break;
        }
        n_old = n;
        advance(&S, step, D->vocab, enc_k, enc_v, enc_mask, D->count, key_cell, src_len);
    }
out:
    for (int i = 0; i < held; i++)
        free(owned[i]);
    free(kv[0]);
    free(kv[1]);
    return status;
}
