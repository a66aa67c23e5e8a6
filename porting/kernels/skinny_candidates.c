/* The output projection fused with the first half of a beam-search step (porting/generate.py's
 * fairseq search; porting/kernels/native.py's ``candidates`` calls this). For x [m, k], the decoder's last
 * states with `group` rows per sentence, it returns each sentence's `count` best continuations of
 *
 *     score[r, j] = ((z[r, j] - max_r) - log sum_j' exp(z[r, j'] - max_r)) + prev[r],  z = x W^T + b
 *
 * (log_softmax as torch computes it, then the row's cumulative score), under fairseq's column rules:
 * <pad> never, <unk> less `unkpen` (before prev is added, as fairseq subtracts it from the
 * log-probs), </s> not at all when `ban_eos` (step < min_len). Best first; equal scores in column
 * order; flat indices row_in_group * n + column, as torch.topk over a sentence's [group * n] scores.
 * A sentence whose `forced` entry is a token may continue only with it, at its own score (fairseq's
 * prefix tokens, and </s> alone at a sentence's max_len; ban_eos does not apply to it): one
 * candidate per row, the sentence's rest filled with -inf at flat index `pad` (which never ends a
 * hypothesis: torch.topk would put some other -inf candidate there, and the search keeps neither).
 *
 * Why fused, by hand: torch writes the [m, n] logits, reads them back for log_softmax, writes the
 * log-probs, and reads them again to scrub NaNs, add the scores and find the top candidates; at
 * batch 32 (160 rows x 6992 columns) that is 2.1 ms of product, 0.64 ms of log_softmax and ~0.3 ms
 * more. Here each 6 x 16 tile of logits is consumed while it is in registers: a running maximum and
 * a running sum of exponentials per row (rescaled when the maximum grows, as in "online softmax"),
 * and the row's best `count` logits so far. Ordering by logit inside a row is ordering by score
 * (the map is monotone), so the row's best logits hold its best candidates; <unk> and </s>, whose
 * scores are shifted or ruled, are kept aside and placed by their final score.
 *
 * The columns' panels are split between the threads of torch's own OpenMP pool (skinny_tiles.h).
 * Each thread keeps its own row states; they are merged after.
 *
 * Results differ from torch's in the last bits (the exponential below and the summation order);
 * rows with a NaN or infinite logit, and sentences with fewer than `count` finite candidates, are
 * handed back (return 1) for torch's path, which reproduces fairseq's rules for those exactly.
 */
#include <stdint.h>

#include "skinny_tiles.h"

struct job {
    const float *x, *panels, *bias;
    int m, k, n, count, threads, pad, unk, eos;
    thread_num_fn thread_num;
    /* per thread t and row r: */
    float *max;             /* [threads][m]: the largest logit seen */
    float *sum;             /* [threads][m][8]: sum of exp(logit - max), 8 lanes */
    float *top;             /* [threads][m][count]: the best logits seen, best first (-inf: none) */
    int *col;               /* [threads][m][count]: their columns */
    float *special;         /* [m][3]: the <unk>, </s> and forced token's logits */
    const int64_t *forced;  /* [m / group]: the token a sentence must take, or -1 (NULL: none) */
    int group;
    int *bad;               /* [threads]: a NaN was seen */
};

/* exp(x) for x <= 0, 8 lanes, within ~2 ulp; 0 below -88 (negligible next to the row's
 * exp(0) = 1 term). exp(x) = 2^n exp(r), n = round(x / ln 2), r = x - n ln 2 in [-ln2/2, ln2/2]
 * (ln 2 in two parts, so r is exact), exp(r) by Cephes' degree-7 polynomial form. */
static inline __m256 exp_nonpositive(__m256 x)
{
    x = _mm256_max_ps(x, _mm256_set1_ps(-88.f));
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.f)));
    /* 2^n through the exponent field; n = -127 gives the bits of 0 */
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

static inline float hmax(__m256 v)
{
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    h = _mm_max_ss(h, _mm_movehdup_ps(h));
    return _mm_cvtss_f32(h);
}

/* value at its place in top/col [count] (best first; after equal values, which have lower columns) */
static void insert(float *top, int *col, int count, float value, int column)
{
    int i = count - 1;
    while (i > 0 && top[i - 1] < value) {
        top[i] = top[i - 1];
        col[i] = col[i - 1];
        i--;
    }
    top[i] = value;
    col[i] = column;
}

/* Row r's 16 logits of columns j.. (width of them real) into thread t's state. */
static void absorb(struct job *J, int t, int r, const float *v, int j, int width)
{
    __m256 v0 = _mm256_loadu_ps(v), v1 = _mm256_loadu_ps(v + 8);
    if (width < PANEL) {                                /* the zero padding is not a column */
        const __m256 lane = _mm256_setr_ps(0, 1, 2, 3, 4, 5, 6, 7), w = _mm256_set1_ps((float)width);
        const __m256 ninf = _mm256_set1_ps(-__builtin_inff());
        v0 = _mm256_blendv_ps(ninf, v0, _mm256_cmp_ps(lane, w, _CMP_LT_OQ));
        v1 = _mm256_blendv_ps(ninf, v1, _mm256_cmp_ps(_mm256_add_ps(lane, _mm256_set1_ps(8.f)), w, _CMP_LT_OQ));
    }
    if (_mm256_movemask_ps(_mm256_or_ps(_mm256_cmp_ps(v0, v0, _CMP_UNORD_Q), _mm256_cmp_ps(v1, v1, _CMP_UNORD_Q))))
        J->bad[t] = 1;
    const size_t row = (size_t)t * J->m + r;
    float *max = J->max + row, *sum = J->sum + row * 8;
    __m256 s = _mm256_loadu_ps(sum);
    const float tile_max = hmax(_mm256_max_ps(v0, v1));
    if (tile_max > *max) {                              /* rescale the sum to the new maximum */
        s = _mm256_mul_ps(s, _mm256_set1_ps(expf(*max - tile_max)));
        *max = tile_max;
    }
    const __m256 mx = _mm256_set1_ps(*max);
    s = _mm256_add_ps(s, _mm256_add_ps(exp_nonpositive(_mm256_sub_ps(v0, mx)), exp_nonpositive(_mm256_sub_ps(v1, mx))));
    _mm256_storeu_ps(sum, s);

    if (J->unk >= j && J->unk < j + width)
        J->special[(size_t)r * 3] = v[J->unk - j];
    if (J->eos >= j && J->eos < j + width)
        J->special[(size_t)r * 3 + 1] = v[J->eos - j];
    const int64_t forced = J->forced ? J->forced[r / J->group] : -1;
    if (forced >= j && forced < j + width)
        J->special[(size_t)r * 3 + 2] = v[forced - j];
    float *top = J->top + row * J->count;
    int *col = J->col + row * J->count;
    const __m256 thr = _mm256_set1_ps(top[J->count - 1]);
    unsigned bits = (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(v0, thr, _CMP_GT_OQ))
                  | (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(v1, thr, _CMP_GT_OQ)) << 8;
    while (bits) {
        const int b = __builtin_ctz(bits), c = j + b;
        bits &= bits - 1;
        if (c != J->pad && c != J->unk && c != J->eos && v[b] > top[J->count - 1])
            insert(top, col, J->count, v[b], c);
    }
}

/* One thread's share of the panels, every row. */
static void pass(void *arg)
{
    struct job local = *(struct job *)arg, *J = &local;     /* a private copy: no shared reads */
    const int t = J->threads > 1 ? J->thread_num() : 0;
    const int panels = (J->n + PANEL - 1) / PANEL;
    const int first = share_of(panels, t, J->threads), last = share_of(panels, t + 1, J->threads);
    static const float zeros[2 * PANEL];
    float tile[MAX_ROWS * 2 * PANEL];
    for (int p = first; p < last;) {
        const int j = p * PANEL, width = J->n - j < PANEL ? J->n - j : PANEL;
        const float *panel = J->panels + (size_t)j * J->k, *b = J->bias ? J->bias + j : zeros;
        /* two full panels at once where the build has the two-panel tile (AVX-512); each row still
         * absorbs its panels in column order, so the state it ends with is the same */
        const int pair = PANELS_AT_ONCE == 2 && p + 1 < last && j + 2 * PANEL <= J->n;
        for (int i = 0; i < J->m; i += MAX_ROWS) {
            const int rows = J->m - i < MAX_ROWS ? J->m - i : MAX_ROWS;
#if PANELS_AT_ONCE == 2
            if (pair) {
                PAIR_FN[rows](J->x + (size_t)i * J->k, panel, b, tile, J->k, 2 * PANEL);
                for (int r = 0; r < rows; r++) {
                    absorb(J, t, i + r, tile + r * 2 * PANEL, j, PANEL);
                    absorb(J, t, i + r, tile + r * 2 * PANEL + PANEL, j + PANEL, PANEL);
                }
                continue;
            }
#endif
            ROWS_FN[rows](J->x + (size_t)i * J->k, panel, b, tile, J->k, PANEL);
            for (int r = 0; r < rows; r++)
                absorb(J, t, i + r, tile + r * PANEL, j, width);
        }
        p += pair ? 2 : 1;
    }
}

struct cand {
    float score;
    int64_t flat;
};

static int better(struct cand a, struct cand b)
{
    return a.score > b.score || (a.score == b.score && a.flat < b.flat);
}

/* Row r's candidates by final score, best first, into out (at most threads * count + 2); returns
 * how many, or -1 when the row has a NaN or no finite maximum. */
static int row_candidates(const struct job *J, int r, float prev, int has_prev, float unkpen, int ban_eos,
                          int64_t forced, struct cand *out)
{
    float max = -__builtin_inff();
    for (int t = 0; t < J->threads; t++)
        if (J->max[(size_t)t * J->m + r] > max)
            max = J->max[(size_t)t * J->m + r];
    if (!(max > -__builtin_inff() && max < __builtin_inff()))
        return -1;
    float sum = 0.f;
    for (int t = 0; t < J->threads; t++) {
        const float *s = J->sum + ((size_t)t * J->m + r) * 8;
        const float lanes = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
        sum += lanes * expf(J->max[(size_t)t * J->m + r] - max);
    }
    const float log_sum = logf(sum);
    int count = 0;
    if (forced >= 0) {                  /* its own score: unkpen as on every <unk>, <pad> never */
        const float score = forced == J->pad ? -__builtin_inff()
                          : ((J->special[(size_t)r * 3 + 2] - max) - log_sum) - (forced == J->unk ? unkpen : 0.f);
        out[0] = (struct cand){has_prev ? score + prev : score, forced};
        return 1;
    }
    for (int t = 0; t < J->threads; t++)
        for (int i = 0; i < J->count; i++) {
            const size_t at = ((size_t)t * J->m + r) * J->count + i;
            if (J->col[at] < 0)
                break;
            out[count++] = (struct cand){(J->top[at] - max) - log_sum, J->col[at]};
        }
    if (J->unk >= 0 && J->unk != J->pad)
        out[count++] = (struct cand){((J->special[(size_t)r * 3] - max) - log_sum) - unkpen, J->unk};
    if (J->eos >= 0 && J->eos != J->pad && !ban_eos)
        out[count++] = (struct cand){(J->special[(size_t)r * 3 + 1] - max) - log_sum, J->eos};
    for (int i = 0; i < count; i++)
        if (has_prev)
            out[i].score += prev;
    for (int i = 1; i < count; i++) {                   /* insertion sort: a few dozen entries */
        struct cand c = out[i];
        int at = i;
        while (at > 0 && better(c, out[at - 1])) {
            out[at] = out[at - 1];
            at--;
        }
        out[at] = c;
    }
    return count;
}

/* x [m, k]; panels and bias as skinny_linear's; prev [m] or NULL (step 0: one row per sentence);
 * forced [m / group] or NULL (see the top of this file; a token outside 0..n-1 is refused, -2);
 * out_score [m / group, count], out_index [m / group, count] (int64). gomp/thread_num: torch's
 * GOMP_parallel and omp_get_thread_num, or NULL (one thread). Returns 0; 1 when torch's path must
 * decide (see above; nothing useful written); -1 when scratch memory cannot be had. */
int skinny_candidates(const float *x, const float *panels, const float *bias, int m, int k, int n,
                      const float *prev, int group, int count, int pad, int unk, int eos, float unkpen, int ban_eos,
                      const int64_t *forced, float *out_score, int64_t *out_index, void *gomp, void *thread_num,
                      int threads)
{
    for (int s = 0; forced && s < m / group; s++)
        if (forced[s] < -1 || forced[s] >= n)
            return -2;
    if (!gomp || !thread_num || threads < 1)
        threads = 1;
    const int per_row = threads * count + 2;
    struct job J = {x, panels, bias, m, k, n, count, threads, pad, unk, eos, (thread_num_fn)thread_num};
    J.forced = forced;
    J.group = group;
    const size_t cells = (size_t)threads * m;
    char *scratch = malloc(cells * (sizeof(float) * 9 + (sizeof(float) + sizeof(int)) * count)
                           + sizeof(float) * 3 * m + sizeof(int) * threads
                           + sizeof(struct cand) * ((size_t)group * per_row) + sizeof(int) * 2 * (size_t)group);
    if (!scratch)
        return -1;
    struct cand *rows = (struct cand *)scratch;            /* first: the most aligned */
    J.max = (float *)(rows + (size_t)group * per_row);
    J.sum = J.max + cells;
    J.top = J.sum + cells * 8;
    J.special = J.top + cells * count;
    J.col = (int *)(J.special + 3 * (size_t)m);
    J.bad = J.col + cells * count;
    int *lengths = J.bad + threads, *taken = lengths + group;
    for (size_t i = 0; i < cells; i++) {
        J.max[i] = -__builtin_inff();
        for (int l = 0; l < 8; l++)
            J.sum[i * 8 + l] = 0.f;
        for (int c = 0; c < count; c++) {
            J.top[i * count + c] = -__builtin_inff();
            J.col[i * count + c] = -1;
        }
    }
    for (int t = 0; t < threads; t++)
        J.bad[t] = 0;

    if (threads > 1)
        ((gomp_parallel_fn)gomp)(pass, &J, (unsigned)threads, 0);
    else
        pass(&J);

    int status = 0;
    for (int t = 0; t < threads; t++)
        status |= J.bad[t];
    /* each sentence: its rows' sorted candidates, merged */
    for (int s = 0; s < m / group && !status; s++) {
        const int64_t only = forced ? forced[s] : -1;
        for (int g = 0; g < group; g++) {
            const int r = s * group + g;
            const int got = row_candidates(&J, r, prev ? prev[r] : 0.f, prev != NULL, unkpen, ban_eos, only,
                                           rows + (size_t)g * per_row);
            if (got < 0) {
                status = 1;
                break;
            }
            for (int i = 0; i < got; i++)
                rows[(size_t)g * per_row + i].flat += (int64_t)g * n;
            lengths[g] = got;
        }
        for (int g = 0; g < group; g++)
            taken[g] = 0;
        for (int o = 0; o < count && !status; o++) {
            int best = -1;
            for (int g = 0; g < group; g++)
                if (taken[g] < lengths[g] && (best < 0 || better(rows[(size_t)g * per_row + taken[g]],
                                                                    rows[(size_t)best * per_row + taken[best]])))
                    best = g;
            if (only >= 0 && (best < 0 || !(rows[(size_t)best * per_row + taken[best]].score > -__builtin_inff()))) {
                for (; o < count; o++) {                        /* the forced sentence's filling (see the top) */
                    out_score[(size_t)s * count + o] = -__builtin_inff();
                    out_index[(size_t)s * count + o] = pad;
                }
                break;
            }
            if (best < 0 || !(rows[(size_t)best * per_row + taken[best]].score > -__builtin_inff())) {
                status = 1;                                     /* fewer than count finite candidates */
                break;
            }
            out_score[(size_t)s * count + o] = rows[(size_t)best * per_row + taken[best]].score;
            out_index[(size_t)s * count + o] = rows[(size_t)best * per_row + taken[best]].flat;
            taken[best]++;
        }
    }
    free(scratch);
    return status;
}
