/* Few-row float32 kernels for the fast decoder step (porting/skinny.py builds and calls them):
 * products y = x W^T + b (x [m, k], W [n, k]) where m is a handful of beam rows and W is small, and
 * attention for few query rows (at the end of this file).
 *
 * Why by hand: for 5 x 128 -> 384 products torch's MKL, oneDNN and OpenBLAS all take 18-25 us on
 * this AMD EPYC (~25 GFLOP/s: per-call dispatch and packing cost more than the arithmetic), and no
 * maintained library on PyPI offers small-matrix kernels (libxsmm is not there). A register-blocked
 * loop over weights packed once takes ~7 us (measurements: the README's "Speed").
 *
 * Weights are packed once into panels of 16 output columns: panels[n16 / 16][k][16], zero-padded
 * to n16 (n rounded up to 16), so that a panel is read front to back. A block of up to 6 rows x
 * 16 columns is accumulated in 12 AVX registers (2 per row), starting from the bias, one k at a
 * time with fused multiply-adds: y[i, j] = b[j] + x[i, 0] w[j, 0] + x[i, 1] w[j, 1] + ..., summed in
 * k order (the last bits differ from MKL's blocked order, as the fast kernels' other sums do).
 */
#include <immintrin.h>
#include <stddef.h>
#include <math.h>
#include <string.h>

#define PANEL 16
#define MAX_ROWS 6

/* Named accumulators, not arrays: GCC keeps an array of __m256 on the stack and stores it back on
 * every iteration (measured 2.5x slower). */
#define INIT(i) __m256 a##i##0 = b0, a##i##1 = b1;
#define FMA(i) { __m256 xi = _mm256_broadcast_ss(x + (size_t)(i) * k + p); \
                 a##i##0 = _mm256_fmadd_ps(xi, w0, a##i##0); a##i##1 = _mm256_fmadd_ps(xi, w1, a##i##1); }
#define STORE(i) { _mm256_storeu_ps(y + (size_t)(i) * ldy, a##i##0); _mm256_storeu_ps(y + (size_t)(i) * ldy + 8, a##i##1); }

/* rows<R>: y[0:R, 0:16] (row stride ldy) from x[0:R, 0:k], one panel and its 16 biases */
#define ROWS(R, INITS, FMAS, STORES) \
static void rows##R(const float *restrict x, const float *restrict panel, const float *restrict bias, \
                    float *restrict y, int k, size_t ldy) \
{ \
    __m256 b0 = _mm256_loadu_ps(bias), b1 = _mm256_loadu_ps(bias + 8); \
    INITS \
    for (int p = 0; p < k; p++, panel += PANEL) { \
        __m256 w0 = _mm256_loadu_ps(panel), w1 = _mm256_loadu_ps(panel + 8); \
        FMAS \
    } \
    STORES \
}

ROWS(1, INIT(0), FMA(0), STORE(0))
ROWS(2, INIT(0) INIT(1), FMA(0) FMA(1), STORE(0) STORE(1))
ROWS(3, INIT(0) INIT(1) INIT(2), FMA(0) FMA(1) FMA(2), STORE(0) STORE(1) STORE(2))
ROWS(4, INIT(0) INIT(1) INIT(2) INIT(3), FMA(0) FMA(1) FMA(2) FMA(3), STORE(0) STORE(1) STORE(2) STORE(3))
ROWS(5, INIT(0) INIT(1) INIT(2) INIT(3) INIT(4), FMA(0) FMA(1) FMA(2) FMA(3) FMA(4),
     STORE(0) STORE(1) STORE(2) STORE(3) STORE(4))
ROWS(6, INIT(0) INIT(1) INIT(2) INIT(3) INIT(4) INIT(5), FMA(0) FMA(1) FMA(2) FMA(3) FMA(4) FMA(5),
     STORE(0) STORE(1) STORE(2) STORE(3) STORE(4) STORE(5))

typedef void (*rows_fn)(const float *, const float *, const float *, float *, int, size_t);
static const rows_fn ROWS_FN[MAX_ROWS + 1] = {NULL, rows1, rows2, rows3, rows4, rows5, rows6};

/* y [m, n] = x [m, k] W^T + bias; panels as above; bias: n16 floats (zero-padded), or NULL. */
void skinny_linear(const float *x, const float *panels, const float *bias, float *y, int m, int k, int n)
{
    static const float zeros[PANEL];
    float tail[MAX_ROWS * PANEL];           /* the last, partial panel's columns */
    for (int j = 0; j < n; j += PANEL) {
        const float *panel = panels + (size_t)j * k;
        const float *b = bias ? bias + j : zeros;
        int width = n - j < PANEL ? n - j : PANEL;
        for (int i = 0; i < m; i += MAX_ROWS) {
            int r = m - i < MAX_ROWS ? m - i : MAX_ROWS;
            float *out = y + (size_t)i * n + j;
            if (width == PANEL) {
                ROWS_FN[r](x + (size_t)i * k, panel, b, out, k, (size_t)n);
            } else {
                ROWS_FN[r](x + (size_t)i * k, panel, b, tail, k, PANEL);
                for (int row = 0; row < r; row++)
                    memcpy(out + (size_t)row * n, tail + row * PANEL, (size_t)width * sizeof(float));
            }
        }
    }
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

void skinny_attention(const float *restrict q, const float *restrict k, const float *restrict v,
                      const float *restrict mask, float *restrict out, int groups, int rows, int keys, int dim,
                      int heads)
{
    float *w = (float *)__builtin_alloca((size_t)keys * sizeof(float));
    for (int g = 0; g < groups; g++) {
        const float *kg = k + (size_t)g * keys * dim, *vg = v + (size_t)g * keys * dim;
        const float *mg = mask ? mask + (size_t)(g / heads) * keys : NULL;
        for (int i = 0; i < rows; i++) {
            const float *qi = q + ((size_t)g * rows + i) * dim;
            float *restrict oi = out + ((size_t)g * rows + i) * dim;
            float top = -__builtin_inff();
            for (int t = 0; t < keys; t++) {
                w[t] = dot(qi, kg + (size_t)t * dim, dim) + (mg ? mg[t] : 0.f);
                if (w[t] > top)
                    top = w[t];
            }
            float sum = 0.f;
            for (int t = 0; t < keys; t++) {
                w[t] = expf(w[t] - top);
                sum += w[t];
            }
            for (int d = 0; d < dim; d++)
                oi[d] = 0.f;
            for (int t = 0; t < keys; t++) {
                const float p = w[t] / sum, *restrict vt = vg + (size_t)t * dim;
                for (int d = 0; d < dim; d++)
                    oi[d] += p * vt[d];
            }
        }
    }
}
