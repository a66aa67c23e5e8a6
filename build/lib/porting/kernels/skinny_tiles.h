/* The register-blocked tile shared by porting/kernels/skinny.c and porting/kernels/skinny_candidates.c: a block of
 * up to 6 rows x 16 output columns of y = x W^T + b, from weights packed into panels of 16 columns
 * (panels[n16 / 16][k][16], zero-padded to n16; see porting/kernels/native.py's pack). The 12 accumulators
 * start from the bias and take one k at a time with fused multiply-adds, so y[i, j] = b[j] +
 * x[i, 0] w[j, 0] + x[i, 1] w[j, 1] + ... is summed in k order. */
#ifndef SKINNY_TILES_H
#define SKINNY_TILES_H

#include <immintrin.h>
#include <stddef.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define PANEL 16
/* Panels are read front to back; asking for the data 2 KB (32 k steps) ahead lets one core stream
 * weights from memory at ~31 GB/s instead of ~27 on 2 threads (5 x 1024 -> 4096, weights out of
 * cache; wmt19-size models at batch 1 run at that speed); no cost where they are cached (measured
 * 160 x 128 -> 6992 and 5 x 128 -> 384 unchanged). A prefetch past the end never faults. */
#define PREFETCH 512
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
        _mm_prefetch((const char *)(panel + PREFETCH), _MM_HINT_T0); \
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

void skinny_linear(const float *x, const float *panels, const float *bias, float *y, int m, int k, int n);

/* Threads: those of torch's own OpenMP pool, through libgomp's GOMP_parallel and
 * omp_get_thread_num, whose addresses porting/kernels/native.py passes in when torch's libgomp is loaded
 * (a second pool of our own would fight torch's spinning threads for the same cores). Work is split
 * evenly and the same way every call: thread t of T takes items [P t / T, P (t + 1) / T) of P
 * (panels, or rows). */
typedef void (*gomp_parallel_fn)(void (*)(void *), void *, unsigned, unsigned);
typedef int (*thread_num_fn)(void);

static inline int share_of(int items, int t, int threads)
{
    return (int)((long long)items * t / threads);
}

#endif
