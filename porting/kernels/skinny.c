/* Few-row float32 kernels for the fast decoder step (porting/kernels/native.py builds and calls them):
 * products y = x W^T + b (x [m, k], W [n, k]) where m is a handful of beam rows and W is small, and
 * attention for few query rows (at the end of this file).
 *
 * Why by hand: for 5 x 128 -> 384 products torch's MKL, oneDNN and OpenBLAS all take 18-25 us on
 * this AMD EPYC (~25 GFLOP/s: per-call dispatch and packing cost more than the arithmetic), and no
 * maintained library on PyPI offers small-matrix kernels (libxsmm is not there). A register-blocked
 * loop over weights packed once takes ~7 us (measurements: the README's "Speed").
 *
 * The products run on porting/kernels/skinny_tiles.h's 6 x 16 tile over weights packed once into panels;
 * sums in k order (the last bits differ from MKL's blocked order, as the fast kernels' other sums do).
 * The output projection with the search's first steps fused: porting/kernels/skinny_candidates.c.
 */
#include <stddef.h>
#include <stdint.h>

#include "skinny_tiles.h"

/* y [m, n] = x [m, k] W^T + bias over panels [first, last) only; panels as skinny_tiles.h says;
 * bias: n16 floats (zero-padded), or NULL. Where the build has a two-panel tile (AVX-512), two full
 * panels at a time. */
static void linear_panels(const float *x, const float *panels, const float *bias, float *y, int m, int k, int n,
                          int first, int last)
{
    static const float zeros[2 * PANEL];
    float tail[MAX_ROWS * PANEL];           /* the last, partial panel's columns */
    for (int j = first * PANEL; j < n && j < last * PANEL;) {
        const float *panel = panels + (size_t)j * k;
        const float *b = bias ? bias + j : zeros;
        int width = n - j < PANEL ? n - j : PANEL;
        const int pair = PANELS_AT_ONCE == 2 && j + 2 * PANEL <= n && j + PANEL < last * PANEL;
        for (int i = 0; i < m; i += MAX_ROWS) {
            int r = m - i < MAX_ROWS ? m - i : MAX_ROWS;
            float *out = y + (size_t)i * n + j;
#if PANELS_AT_ONCE == 2
            if (pair) {
                PAIR_FN[r](x + (size_t)i * k, panel, b, out, k, (size_t)n);
                continue;
            }
#endif
            if (width == PANEL) {
                ROWS_FN[r](x + (size_t)i * k, panel, b, out, k, (size_t)n);
            } else {
                ROWS_FN[r](x + (size_t)i * k, panel, b, tail, k, PANEL);
                for (int row = 0; row < r; row++)
                    memcpy(out + (size_t)row * n, tail + row * PANEL, (size_t)width * sizeof(float));
            }
        }
        j += pair ? 2 * PANEL : PANEL;
    }
}

/* y [m, n] = x [m, k] W^T + bias, on this thread */
void skinny_linear(const float *x, const float *panels, const float *bias, float *y, int m, int k, int n)
{
    linear_panels(x, panels, bias, y, m, k, n, 0, (n + PANEL - 1) / PANEL);
}

struct linear_job {
    const float *x, *panels, *bias;
    float *y;
    int m, k, n, threads;
    thread_num_fn thread_num;
};

static void linear_share(void *arg)
{
    const struct linear_job J = *(const struct linear_job *)arg;   /* a private copy: no shared reads */
    const int t = J.thread_num(), panels = (J.n + PANEL - 1) / PANEL;
    linear_panels(J.x, J.panels, J.bias, J.y, J.m, J.k, J.n, share_of(panels, t, J.threads),
                  share_of(panels, t + 1, J.threads));
}

/* skinny_linear with the panels split between `threads` threads of torch's pool (gomp, thread_num:
 * see skinny_tiles.h), from THREADED_MACS multiply-adds on: a parallel region costs ~2 us, and
 * 5 x 128 -> 6992 takes ~100 us on one thread, 5 x 128 -> 384 ~7 us. */
#define THREADED_MACS (1LL << 20)

void skinny_linear_threads(const float *x, const float *panels, const float *bias, float *y, int m, int k, int n,
                           void *gomp, void *thread_num, int threads)
{
    if (!gomp || !thread_num || threads < 2 || (long long)m * k * n < THREADED_MACS) {
        skinny_linear(x, panels, bias, y, m, k, n);
        return;
    }
    struct linear_job J = {x, panels, bias, y, m, k, n, threads, (thread_num_fn)thread_num};
    ((gomp_parallel_fn)gomp)(linear_share, &J, (unsigned)threads, 0);
}

/* Attention for few query rows (porting/fast.py's ``attention`` below FUSED_ATTENTION_ROWS, where
 * torch's fused kernel costs ~30 us a call for ~25 us less work than that):
 *   out[g, i] = softmax_t(q[g, i] . k[g, t] + mask[g / heads, t]) v[g, t]
 * q, out [groups, rows, dim]; k, v [groups, keys, dim]; mask (additive: 0 or -inf) [groups / heads,
 * keys] or NULL. q is already scaled. Softmax as torch computes it: exp(s - max) / sum, in float32. */
static float dot(const float *restrict a, const float *restrict b, int dim)
{
    int d = 0;
    float s = 0.f;
    if (dim >= 8) {
        __m256 acc = _mm256_mul_ps(_mm256_loadu_ps(a), _mm256_loadu_ps(b));
        for (d = 8; d + 8 <= dim; d += 8)
            acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + d), _mm256_loadu_ps(b + d), acc);
        __m128 h = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
        h = _mm_add_ps(h, _mm_movehl_ps(h, h));
        h = _mm_add_ss(h, _mm_movehdup_ps(h));
        s = _mm_cvtss_f32(h);
    }
    for (; d < dim; d++)
        s += a[d] * b[d];
    return s;
}

/* One (row, head): out = softmax_t(q . keys[t] + mask[t]) values[t], keys/values [count, dim]
 * contiguous; w: count floats of scratch. */
static void attend(const float *restrict q, const float *restrict keys, const float *restrict values,
                   const float *restrict mask, int count, int dim, float *restrict out, float *restrict w)
{
    float top = -__builtin_inff();
    for (int t = 0; t < count; t++) {
        w[t] = dot(q, keys + (size_t)t * dim, dim) + (mask ? mask[t] : 0.f);
        if (w[t] > top)
            top = w[t];
    }
    float sum = 0.f;
    for (int t = 0; t < count; t++) {
        w[t] = expf(w[t] - top);
        sum += w[t];
    }
    for (int d = 0; d < dim; d++)
        out[d] = 0.f;
    for (int t = 0; t < count; t++) {
        const float p = w[t] / sum, *restrict vt = values + (size_t)t * dim;
        for (int d = 0; d < dim; d++)
            out[d] += p * vt[d];
    }
}

void skinny_attention(const float *restrict q, const float *restrict k, const float *restrict v,
                      const float *restrict mask, float *restrict out, int groups, int rows, int keys, int dim,
                      int heads)
{
    float *w = (float *)__builtin_alloca((size_t)keys * sizeof(float));
    for (int g = 0; g < groups; g++)
        for (int i = 0; i < rows; i++)
            attend(q + ((size_t)g * rows + i) * dim, k + (size_t)g * keys * dim, v + (size_t)g * keys * dim,
                   mask ? mask + (size_t)(g / heads) * keys : NULL, keys, dim, out + ((size_t)g * rows + i) * dim, w);
}

/* The decoder's input at one step: x[r] = scale * embed[tokens[r]] + position, in float32 and in
 * that order, as torch computes ``scale * embedding(tokens) + positions`` (bitwise the same);
 * embed [vocab, c], position [c]. Returns -1 (nothing written) when a token is outside the table. */
int skinny_embed(const int64_t *tokens, int n, const float *embed, int vocab, int c, float scale,
                 const float *position, float *x)
{
    for (int r = 0; r < n; r++)
        if (tokens[r] < 0 || tokens[r] >= vocab)
            return -1;
    for (int r = 0; r < n; r++) {
        const float *e = embed + (size_t)tokens[r] * c;
        for (int j = 0; j < c; j++)
            x[(size_t)r * c + j] = scale * e[j] + position[j];
    }
    return 0;
}

/* ---------------------------------------------------------------- one decoder layer, few rows
 *
 * The fast decoder step's layer (porting/fast.py) in one call for few rows: at batch 1 a layer is
 * ~25 torch calls of glue (splits, scaling, cache concatenation, residual adds, layer norms) around
 * the products, and each costs more than its arithmetic. Same operations in the same order as the
 * Python step; sums differ in the last bits (float32, k order) as the other fast kernels' do.
 * Weights: panels and n16-padded biases made by porting/kernels/native.py (pack). Field order matters:
 * porting/kernels/native.py's _Layer mirrors it, and checks the mirror against skinny_abi when it loads. */
struct layer {
    const float *qkv_w, *qkv_b;                 /* self-attention q, k, v fused: c -> 3c */
    const float *self_out_w, *self_out_b;       /* c -> c */
    const float *self_ln_w, *self_ln_b;         /* [c] */
    const float *q_w, *q_b;                     /* encoder attention's queries: c -> c */
    const float *cross_out_w, *cross_out_b;     /* c -> c */
    const float *cross_ln_w, *cross_ln_b;
    const float *fc1_w, *fc1_b;                 /* c -> ffn */
    const float *fc2_w, *fc2_b;                 /* ffn -> c */
    const float *final_ln_w, *final_ln_b;
    int c, ffn, heads, pre_norm, activation;     /* activation: an enum activation */
    float scaling, eps;
};

/* fairseq's activation_fn values; must match porting/model/activation.py's Activation codes. */
enum activation { ACTIVATION_RELU = 0, ACTIVATION_GELU = 1 };

/* f[j] = activation(f[j]) for j < n; returns 0, or -3 for an activation without a case here. */
static int activate(int activation, float *f, size_t n)
{
    switch (activation) {
    case ACTIVATION_RELU:
        for (size_t j = 0; j < n; j++)
            f[j] = f[j] > 0.f ? f[j] : 0.f;
        return 0;
    case ACTIVATION_GELU:                       /* the exact (erf) one, as fairseq's "gelu" */
        for (size_t j = 0; j < n; j++)
            f[j] = 0.5f * f[j] * (1.f + erff(f[j] * 0.70710678118654752f));
        return 0;
    default:
        return -3;
    }
}

/* Whether `activate` has a case for this code (Python asks before it hands a layer over). */
int skinny_activation_supported(int activation)
{
    float probe = 1.f;
    return activate(activation, &probe, 1) == 0;
}

/* The struct layer this file was compiled with: its size, then each field's offset in declaration
 * order (out must hold SKINNY_ABI_FIELDS + 1 values). Returns how many it wrote. */
#define SKINNY_ABI_FIELDS 25
int skinny_abi(int64_t *out)
{
    const size_t offsets[SKINNY_ABI_FIELDS] = {
        offsetof(struct layer, qkv_w), offsetof(struct layer, qkv_b), offsetof(struct layer, self_out_w),
        offsetof(struct layer, self_out_b), offsetof(struct layer, self_ln_w), offsetof(struct layer, self_ln_b),
        offsetof(struct layer, q_w), offsetof(struct layer, q_b), offsetof(struct layer, cross_out_w),
        offsetof(struct layer, cross_out_b), offsetof(struct layer, cross_ln_w), offsetof(struct layer, cross_ln_b),
        offsetof(struct layer, fc1_w), offsetof(struct layer, fc1_b), offsetof(struct layer, fc2_w),
        offsetof(struct layer, fc2_b), offsetof(struct layer, final_ln_w), offsetof(struct layer, final_ln_b),
        offsetof(struct layer, c), offsetof(struct layer, ffn), offsetof(struct layer, heads),
        offsetof(struct layer, pre_norm), offsetof(struct layer, activation), offsetof(struct layer, scaling),
        offsetof(struct layer, eps)};
    out[0] = (int64_t)sizeof(struct layer);
    for (int i = 0; i < SKINNY_ABI_FIELDS; i++)
        out[i + 1] = (int64_t)offsets[i];
    return SKINNY_ABI_FIELDS + 1;
}

/* torch's LayerNorm over rows of x [n, c] into y (may be x): (x - mean) / sqrt(var + eps) * w + b,
 * biased variance; moments summed in double */
static void layer_norm(const float *x, float *y, int n, int c, const float *w, const float *b, float eps)
{
    for (int i = 0; i < n; i++) {
        const float *xi = x + (size_t)i * c;
        float *yi = y + (size_t)i * c;
        double sum = 0, sq = 0;
        for (int j = 0; j < c; j++)
            sum += xi[j];
        const float mean = (float)(sum / c);
        for (int j = 0; j < c; j++)
            sq += (double)(xi[j] - mean) * (xi[j] - mean);
        const float rstd = (float)(1.0 / sqrt(sq / c + eps));
        for (int j = 0; j < c; j++)
            yi[j] = (xi[j] - mean) * rstd * w[j] + b[j];
    }
}

/* layer_norm as an entry point: the decoder's final layer norm, in the step (porting/kernels/fast_decoder.py)
 * and in the search's loop (skinny_search.c) alike */
void skinny_layer_norm(const float *x, float *y, int n, int c, const float *w, const float *b, float eps)
{
    layer_norm(x, y, n, c, w, b, eps);
}

/* x + f(norm(x)) (pre-norm) or norm(x + f(x)) (post-norm), as porting.model.residual_block: the
 * sublayer's input h is x or its norm; the caller adds f into x through add_norm */
static const float *sublayer_input(const struct layer *L, const float *x, float *h, int n,
                                   const float *ln_w, const float *ln_b)
{
    if (!L->pre_norm)
        return x;
    layer_norm(x, h, n, L->c, ln_w, ln_b, L->eps);
    return h;
}

static void add_norm(const struct layer *L, float *x, const float *f, int n, const float *ln_w, const float *ln_b)
{
    for (size_t j = 0; j < (size_t)n * L->c; j++)
        x[j] += f[j];
    if (!L->pre_norm)
        layer_norm(x, x, n, L->c, ln_w, ln_b, L->eps);
}

/* Attention inside a layer: each (row, head) of the self-attention (over the row's cached keys and
 * values, this step's included) or of the encoder attention (over its sentence's encoder keys). */
struct attention_job {
    const struct layer *L;
    const float *q;                 /* a row's queries at q + row * q_stride (qkv rows: 3c; queries alone: c) */
    const float *keys, *values;     /* self: kv_new's two planes; encoder: [sentences, heads, src_len, d] */
    const float *enc_mask;
    float *out;                     /* [n, c] */
    int n, keys_per_row, src_len, beam, cross, threads;
    thread_num_fn thread_num;
    int q_stride;
    /* cross: row r attends to sentence (keep ? keep[r] : r) / beam's keys: the decoder's beam rows
     * per sentence, or the encoder's real tokens at their padded batch-major positions (beam = src_len) */
    const int64_t *keep;
};

#define THREADED_ROWS 16            /* more rows than this: attention on torch's threads too */

static void attention_rows(const struct attention_job *J, int r0, int r1, float *w)
{
    const int c = J->L->c, heads = J->L->heads, d = c / heads;
    for (int r = r0; r < r1; r++)
        for (int hd = 0; hd < heads; hd++) {
            float *out = J->out + (size_t)r * c + (size_t)hd * d;
            const float *q = J->q + (size_t)r * J->q_stride + (size_t)hd * d;
            if (!J->cross) {
                const size_t cell = ((size_t)r * heads + hd) * J->keys_per_row * d;   /* [n, heads, t + 1, d] */
                attend(q, J->keys + cell, J->values + cell, NULL, J->keys_per_row, d, out, w);
            } else {
                const size_t sent = (size_t)((J->keep ? J->keep[r] : r) / J->beam);
                const size_t cell = (sent * heads + hd) * J->src_len * d;             /* [sentences, heads, S, d] */
                attend(q, J->keys + cell, J->values + cell, J->enc_mask ? J->enc_mask + sent * J->src_len : NULL,
                       J->src_len, d, out, w);
            }
        }
}

static void attention_share(void *arg)
{
    const struct attention_job J = *(const struct attention_job *)arg;  /* a private copy: no shared reads */
    const int id = J.thread_num();
    float *w = (float *)__builtin_alloca(sizeof(float) * (size_t)(J.cross ? J.src_len : J.keys_per_row));
    attention_rows(&J, share_of(J.n, id, J.threads), share_of(J.n, id + 1, J.threads), w);
}

static void attention(const struct attention_job *J, float *w, void *gomp)
{
    if (gomp && J->thread_num && J->threads > 1 && J->n > THREADED_ROWS)
        ((gomp_parallel_fn)gomp)(attention_share, (void *)J, (unsigned)J->threads, 0);
    else
        attention_rows(J, 0, J->n, w);
}

/* A layer's feed-forward sublayer on x [n, c], in place; h [n, c], f [n, ffn] and out [n, c] scratch.
 * Returns 0, or -3 for an activation without a case. */
static int feed_forward(const struct layer *L, float *x, float *h, float *f, float *out, int n, void *gomp,
                        void *thread_num, int threads)
{
    const float *in = sublayer_input(L, x, h, n, L->final_ln_w, L->final_ln_b);
    skinny_linear_threads(in, L->fc1_w, L->fc1_b, f, n, L->c, L->ffn, gomp, thread_num, threads);
    if (activate(L->activation, f, (size_t)n * L->ffn))
        return -3;
    skinny_linear_threads(f, L->fc2_w, L->fc2_b, out, n, L->ffn, L->c, gomp, thread_num, threads);
    add_norm(L, x, out, n, L->final_ln_w, L->final_ln_b);
    return 0;
}

/* One layer: x [n, c], updated in place. kv_old [2, n_old, heads, t, d] (NULL when t = 0) ->
 * kv_new [2, n, heads, t + 1, d]: row r's cached keys and values (those of old row order[r], or
 * of row r when order is NULL: the search's reordering, folded into this copy) with this step's
 * appended. enc_k, enc_v [sentences, heads, src_len, d] (row r's sentence: r / (n / sentences));
 * enc_mask additive [sentences, src_len] or NULL. Returns 0, or -1 when scratch memory cannot be had. */
static int decoder_layer(const struct layer *L, float *x, int n, int t, const float *kv_old, int n_old,
                         const int64_t *order, float *kv_new, const float *enc_k, const float *enc_v,
                         const float *enc_mask, int sentences, int src_len, void *gomp, void *thread_num, int threads)
{
#define PRODUCT(x, w, b, y, k, out) skinny_linear_threads(x, w, b, y, n, k, out, gomp, thread_num, threads)
    const int c = L->c, heads = L->heads, d = c / heads, beam = n / sentences;
    const int longest = t + 1 > src_len ? t + 1 : src_len;
    float *h = malloc(sizeof(float) * ((size_t)n * (3 * c + 3 * c + L->ffn) + longest));
    if (!h)
        return -1;
    float *qkv = h + (size_t)n * c, *att = qkv + (size_t)n * 3 * c, *f = att + (size_t)n * c;
    float *w = f + (size_t)n * (c > L->ffn ? c : L->ffn);
    const float *in;

    /* self-attention */
    in = sublayer_input(L, x, h, n, L->self_ln_w, L->self_ln_b);
    PRODUCT(in, L->qkv_w, L->qkv_b, qkv, c, 3 * c);
    for (int r = 0; r < n; r++)
        for (int j = 0; j < c; j++)
            qkv[(size_t)r * 3 * c + j] *= L->scaling;
    for (int plane = 0; plane < 2; plane++)             /* 0: keys, 1: values */
        for (int r = 0; r < n; r++)
            for (int hd = 0; hd < heads; hd++) {
                const size_t cell = ((size_t)plane * n + r) * heads + hd;   /* [2, n, heads] */
                const size_t from = ((size_t)plane * n_old + (order ? (size_t)order[r] : (size_t)r)) * heads + hd;
                float *dst = kv_new + cell * (t + 1) * d;
                if (t)
                    memcpy(dst, kv_old + from * t * d, sizeof(float) * t * d);
                memcpy(dst + (size_t)t * d, qkv + (size_t)r * 3 * c + (size_t)(plane + 1) * c + (size_t)hd * d,
                       sizeof(float) * d);
            }
    const struct attention_job self = {L, qkv, kv_new, kv_new + (size_t)n * heads * (t + 1) * d, NULL, att, n, t + 1,
                                       src_len, beam, 0, threads, (thread_num_fn)thread_num, 3 * c, NULL};
    attention(&self, w, gomp);
    PRODUCT(att, L->self_out_w, L->self_out_b, f, c, c);
    add_norm(L, x, f, n, L->self_ln_w, L->self_ln_b);

    /* encoder attention */
    in = sublayer_input(L, x, h, n, L->cross_ln_w, L->cross_ln_b);
    PRODUCT(in, L->q_w, L->q_b, qkv, c, c);
    for (size_t j = 0; j < (size_t)n * c; j++)
        qkv[j] *= L->scaling;
    const struct attention_job cross = {L, qkv, enc_k, enc_v, enc_mask, att, n, 0, src_len, beam, 1, threads,
                                        (thread_num_fn)thread_num, c, NULL};
    attention(&cross, w, gomp);
    PRODUCT(att, L->cross_out_w, L->cross_out_b, f, c, c);
    add_norm(L, x, f, n, L->cross_ln_w, L->cross_ln_b);

    const int status = feed_forward(L, x, h, f, att, n, gomp, thread_num, threads);
    free(h);
    return status;
#undef PRODUCT
}

/* The decoder's layers in turn (porting/kernels/native.py's DecoderLayers): decoder_layer for each.
 * kv_old: every layer's cache stacked, [count, 2, n_old, heads, t, d] (NULL when t = 0); kv_new
 * [count, 2, n, heads, t + 1, d] (one buffer for all layers: one allocation a step, not one a
 * layer); enc_k[i], enc_v[i] the i-th layer's. order [n] (or NULL) indexes rows of the previous
 * step's n_old; out-of-range entries are refused (returns -2) before anything is written.
 * Returns 0, -1 (no scratch memory), -2 or -3 (an activation without a case). */
int skinny_decoder_layers(const struct layer *layers, int count, float *x, int n, int t, const float *kv_old,
                          int n_old, const int64_t *order, float *kv_new, const float *const *enc_k,
                          const float *const *enc_v, const float *enc_mask, int sentences, int src_len,
                          void *gomp, void *thread_num, int threads)
{
    for (int r = 0; order && r < n; r++)
        if (order[r] < 0 || order[r] >= n_old)
            return -2;
    const size_t cell = (size_t)2 * layers[0].c;                  /* a row's keys and values, all heads */
    for (int i = 0; i < count; i++) {
        const float *old = t ? kv_old + (size_t)i * n_old * t * cell : NULL;
        const int status = decoder_layer(layers + i, x, n, t, old, n_old, order, kv_new + (size_t)i * n * (t + 1) * cell,
                                         enc_k[i], enc_v[i], enc_mask, sentences, src_len, gomp, thread_num, threads);
        if (status)
            return status;
    }
    return 0;
}

/* ---------------------------------------------------------------- the encoder's layers
 *
 * porting/kernels/fast_encoder.py's layers in one call: on the batch's real tokens only (rows), whose
 * keys and values are laid out per sentence over the padded length for attention (padding: zero
 * keys and values, masked out). The encoder layer is the decoder's without encoder attention (its
 * struct layer's q, cross_out and cross_ln fields unused). */
static int encoder_layer(const struct layer *L, float *x, int n, const int64_t *keep, int sentences, int src_len,
                         const float *mask, void *gomp, void *thread_num, int threads)
{
#define PRODUCT(x, w, b, y, k, out) skinny_linear_threads(x, w, b, y, n, k, out, gomp, thread_num, threads)
    const int c = L->c, heads = L->heads, d = c / heads;
    const size_t plane = (size_t)sentences * src_len * c;           /* [sentences, heads, src_len, d] */
    float *h = malloc(sizeof(float) * ((size_t)n * (c + 3 * c + c + (c > L->ffn ? c : L->ffn)) + 2 * plane + src_len));
    if (!h)
        return -1;
    float *qkv = h + (size_t)n * c, *att = qkv + (size_t)n * 3 * c, *f = att + (size_t)n * c;
    float *keys = f + (size_t)n * (c > L->ffn ? c : L->ffn), *values = keys + plane, *w = values + plane;

    const float *in = sublayer_input(L, x, h, n, L->self_ln_w, L->self_ln_b);
    PRODUCT(in, L->qkv_w, L->qkv_b, qkv, c, 3 * c);
    for (int r = 0; r < n; r++)
        for (int j = 0; j < c; j++)
            qkv[(size_t)r * 3 * c + j] *= L->scaling;
    if (keep)                                       /* padding's keys and values: zeros, masked out */
        memset(keys, 0, sizeof(float) * 2 * plane);
    for (int r = 0; r < n; r++) {
        const size_t at = keep ? (size_t)keep[r] : (size_t)r, sent = at / src_len, pos = at % src_len;
        for (int hd = 0; hd < heads; hd++) {
            const size_t cell = ((sent * heads + hd) * src_len + pos) * d;
            memcpy(keys + cell, qkv + (size_t)r * 3 * c + c + (size_t)hd * d, sizeof(float) * d);
            memcpy(values + cell, qkv + (size_t)r * 3 * c + 2 * c + (size_t)hd * d, sizeof(float) * d);
        }
    }
    const struct attention_job self = {L, qkv, keys, values, mask, att, n, 0, src_len, src_len, 1, threads,
                                       (thread_num_fn)thread_num, 3 * c, keep};
    attention(&self, w, gomp);
    PRODUCT(att, L->self_out_w, L->self_out_b, f, c, c);
    add_norm(L, x, f, n, L->self_ln_w, L->self_ln_b);

    const int status = feed_forward(L, x, h, f, att, n, gomp, thread_num, threads);
    free(h);
    return status;
#undef PRODUCT
}

/* The encoder's layers in turn (porting/kernels/native.py's EncoderLayers): x [rows, c], the real
 * tokens' states, updated in place; keep [rows]: each row's position in the padded batch-major
 * [sentences * src_len] order, increasing (NULL: no padding, rows = sentences * src_len); mask
 * additive [sentences, src_len] or NULL. Returns 0, -1 (no scratch memory), -2 (keep out of range,
 * nothing written) or -3 (an activation without a case). */
int skinny_encoder_layers(const struct layer *layers, int count, float *x, int rows, const int64_t *keep, int sentences,
                          int src_len, const float *mask, void *gomp, void *thread_num, int threads)
{
    for (int r = 0; keep && r < rows; r++)
        if (keep[r] < 0 || keep[r] >= (int64_t)sentences * src_len)
            return -2;
    if (!keep && rows != sentences * src_len)
        return -2;
    for (int i = 0; i < count; i++) {
        const int status = encoder_layer(layers + i, x, rows, keep, sentences, src_len, mask, gomp, thread_num, threads);
        if (status)
            return status;
    }
    return 0;
}


/* skinny_signatures: SKINNY_ENTRY_POINTS (skinny_abi.h) as text, "name:r:args;" per entry point, each
 * type reduced by _Generic to its ctypes code (p, i, f; the return type's v for void). */
#define SK_CODE(T) _Generic((T)0, int: "i", float: "f", default: "p")
#define SK_RETURN_CODE(T) _Generic((T(*)(void))0, void (*)(void): "v", int (*)(void): "i", float (*)(void): "f", \
                                   default: "p")
#define SK_COUNT(...) SK_COUNT_(__VA_ARGS__, 24, 23, 22, 21, 20, 19, 18, 17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, \
                                 4, 3, 2, 1)
#define SK_COUNT_(_1, _2, _3, _4, _5, _6, _7, _8, _9, _10, _11, _12, _13, _14, _15, _16, _17, _18, _19, _20, _21, _22, \
                  _23, _24, N, ...) N
#define SK_JOIN(a, b) SK_JOIN_(a, b)
#define SK_JOIN_(a, b) a##b
/* SK_EACH(M, a, b, ...): M(a) M(b) ... for up to 24 arguments */
#define SK_EACH(M, ...) SK_JOIN(SK_EACH_, SK_COUNT(__VA_ARGS__))(M, __VA_ARGS__)
#define SK_EACH_1(M, a) M(a)
#define SK_EACH_2(M, a, ...) M(a) SK_EACH_1(M, __VA_ARGS__)
#define SK_EACH_3(M, a, ...) M(a) SK_EACH_2(M, __VA_ARGS__)
#define SK_EACH_4(M, a, ...) M(a) SK_EACH_3(M, __VA_ARGS__)
#define SK_EACH_5(M, a, ...) M(a) SK_EACH_4(M, __VA_ARGS__)
#define SK_EACH_6(M, a, ...) M(a) SK_EACH_5(M, __VA_ARGS__)
#define SK_EACH_7(M, a, ...) M(a) SK_EACH_6(M, __VA_ARGS__)
#define SK_EACH_8(M, a, ...) M(a) SK_EACH_7(M, __VA_ARGS__)
#define SK_EACH_9(M, a, ...) M(a) SK_EACH_8(M, __VA_ARGS__)
#define SK_EACH_10(M, a, ...) M(a) SK_EACH_9(M, __VA_ARGS__)
#define SK_EACH_11(M, a, ...) M(a) SK_EACH_10(M, __VA_ARGS__)
#define SK_EACH_12(M, a, ...) M(a) SK_EACH_11(M, __VA_ARGS__)
#define SK_EACH_13(M, a, ...) M(a) SK_EACH_12(M, __VA_ARGS__)
#define SK_EACH_14(M, a, ...) M(a) SK_EACH_13(M, __VA_ARGS__)
#define SK_EACH_15(M, a, ...) M(a) SK_EACH_14(M, __VA_ARGS__)
#define SK_EACH_16(M, a, ...) M(a) SK_EACH_15(M, __VA_ARGS__)
#define SK_EACH_17(M, a, ...) M(a) SK_EACH_16(M, __VA_ARGS__)
#define SK_EACH_18(M, a, ...) M(a) SK_EACH_17(M, __VA_ARGS__)
#define SK_EACH_19(M, a, ...) M(a) SK_EACH_18(M, __VA_ARGS__)
#define SK_EACH_20(M, a, ...) M(a) SK_EACH_19(M, __VA_ARGS__)
#define SK_EACH_21(M, a, ...) M(a) SK_EACH_20(M, __VA_ARGS__)
#define SK_EACH_22(M, a, ...) M(a) SK_EACH_21(M, __VA_ARGS__)
#define SK_EACH_23(M, a, ...) M(a) SK_EACH_22(M, __VA_ARGS__)
#define SK_EACH_24(M, a, ...) M(a) SK_EACH_23(M, __VA_ARGS__)
#define SK_APPEND(T) strcat(text, SK_CODE(T));
#define SK_TEXT(name, ret, ...) strcat(text, #name ":"); strcat(text, SK_RETURN_CODE(ret)); strcat(text, ":"); \
                                SK_EACH(SK_APPEND, __VA_ARGS__) strcat(text, ";");

const char *skinny_signatures(void)
{
    static char text[2048];                     /* ~400 characters today; written once, on the first call */
    if (!text[0]) {
        SKINNY_ENTRY_POINTS(SK_TEXT)
    }
    return text;
}
