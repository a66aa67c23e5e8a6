/* The register-blocked tile shared by porting/kernels/skinny.c and porting/kernels/skinny_candidates.c: a block of
 * up to 6 rows x 16 output columns of y = x W^T + b, from weights packed into panels of 16 columns
 * (panels[n16 / 16][k][16], zero-padded to n16; see porting/kernels/native.py's pack). The 12 accumulators
 * start from the bias and take one k at a time with fused multiply-adds, so y[i, j] = b[j] +
 * x[i, 0] w[j, 0] + x[i, 1] w[j, 1] + ... is summed in k order. */
#ifndef SKINNY_TILES_H
#define SKINNY_TILES_H

#include <immintrin.h>
#include "skinny_abi.h"
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

/* M(R, INITS, FMAS, STORES) for each row count R of a tile, 1 to MAX_ROWS: the tile kernels' instances */
#define EACH_ROW_COUNT(M, I, F, S) \
    M(1, I(0), F(0), S(0)) \
    M(2, I(0) I(1), F(0) F(1), S(0) S(1)) \
    M(3, I(0) I(1) I(2), F(0) F(1) F(2), S(0) S(1) S(2)) \
    M(4, I(0) I(1) I(2) I(3), F(0) F(1) F(2) F(3), S(0) S(1) S(2) S(3)) \
    M(5, I(0) I(1) I(2) I(3) I(4), F(0) F(1) F(2) F(3) F(4), S(0) S(1) S(2) S(3) S(4)) \
    M(6, I(0) I(1) I(2) I(3) I(4) I(5), F(0) F(1) F(2) F(3) F(4) F(5), S(0) S(1) S(2) S(3) S(4) S(5))

#ifdef __AVX512F__
/* The AVX-512 build (porting/kernels/build.py compiles this file twice and loads the one the CPU can
 * run): a panel's 16 columns are one register, so a row takes one accumulator, and the product
 * kernels take two panels at a time (rows x 32 columns: 12 accumulators, as the AVX2 tile has, twice
 * the columns per instruction). Each y[i, j] is the same chain of fused multiply-adds in the same k
 * order as the AVX2 tile's: the two builds give bitwise equal results (tests/test_native_kernels.py).
 * x[i, p] is broadcast by the multiply-add itself (an embedded {1to16} operand). */
#define INIT(i) __m512 a##i##0 = b0;
#define FMA(i) { a##i##0 = _mm512_fmadd_ps(_mm512_set1_ps(x[(size_t)(i) * k + p]), w0, a##i##0); }
#define STORE(i) { _mm512_storeu_ps(y + (size_t)(i) * ldy, a##i##0); }
#define BIAS __m512 b0 = _mm512_loadu_ps(bias);
#define WEIGHTS __m512 w0 = _mm512_loadu_ps(panel);

#define INIT2(i) __m512 a##i##0 = b0, a##i##1 = b1;
#define FMA2(i) { const __m512 xi = _mm512_set1_ps(x[(size_t)(i) * k + p]); \
                  a##i##0 = _mm512_fmadd_ps(xi, w0, a##i##0); a##i##1 = _mm512_fmadd_ps(xi, w1, a##i##1); }
#define STORE2(i) { _mm512_storeu_ps(y + (size_t)(i) * ldy, a##i##0); _mm512_storeu_ps(y + (size_t)(i) * ldy + PANEL, a##i##1); }

/* pair<R>: y[0:R, 0:32] (row stride ldy) from x[0:R, 0:k], two consecutive full panels (the second
 * k * 16 floats after the first) and their 32 biases */
#define PAIR(R, INITS, FMAS, STORES) \
static void pair##R(const float *restrict x, const float *restrict panel, const float *restrict bias, \
                    float *restrict y, int k, size_t ldy) \
{ \
    const float *restrict second = panel + (size_t)k * PANEL; \
    __m512 b0 = _mm512_loadu_ps(bias), b1 = _mm512_loadu_ps(bias + PANEL); \
    INITS \
    for (int p = 0; p < k; p++, panel += PANEL, second += PANEL) { \
        _mm_prefetch((const char *)(panel + PREFETCH), _MM_HINT_T0); \
        _mm_prefetch((const char *)(second + PREFETCH), _MM_HINT_T0); \
        __m512 w0 = _mm512_loadu_ps(panel), w1 = _mm512_loadu_ps(second); \
        FMAS \
    } \
    STORES \
}

EACH_ROW_COUNT(PAIR, INIT2, FMA2, STORE2)

typedef void (*pair_fn)(const float *, const float *, const float *, float *, int, size_t);
static const pair_fn PAIR_FN[MAX_ROWS + 1] = {NULL, pair1, pair2, pair3, pair4, pair5, pair6};
#define PANELS_AT_ONCE 2
#else
/* Named accumulators, not arrays: GCC keeps an array of __m256 on the stack and stores it back on
 * every iteration (measured 2.5x slower). */
#define INIT(i) __m256 a##i##0 = b0, a##i##1 = b1;
#define FMA(i) { __m256 xi = _mm256_broadcast_ss(x + (size_t)(i) * k + p); \
                 a##i##0 = _mm256_fmadd_ps(xi, w0, a##i##0); a##i##1 = _mm256_fmadd_ps(xi, w1, a##i##1); }
#define STORE(i) { _mm256_storeu_ps(y + (size_t)(i) * ldy, a##i##0); _mm256_storeu_ps(y + (size_t)(i) * ldy + 8, a##i##1); }
#define BIAS __m256 b0 = _mm256_loadu_ps(bias), b1 = _mm256_loadu_ps(bias + 8);
#define WEIGHTS __m256 w0 = _mm256_loadu_ps(panel), w1 = _mm256_loadu_ps(panel + 8);
#define PANELS_AT_ONCE 1
#endif

/* rows<R>: y[0:R, 0:16] (row stride ldy) from x[0:R, 0:k], one panel and its 16 biases */
#define ROWS(R, INITS, FMAS, STORES) \
static void rows##R(const float *restrict x, const float *restrict panel, const float *restrict bias, \
                    float *restrict y, int k, size_t ldy) \
{ \
    BIAS \
    INITS \
    for (int p = 0; p < k; p++, panel += PANEL) { \
        _mm_prefetch((const char *)(panel + PREFETCH), _MM_HINT_T0); \
        WEIGHTS \
        FMAS \
    } \
    STORES \
}

EACH_ROW_COUNT(ROWS, INIT, FMA, STORE)

typedef void (*rows_fn)(const float *, const float *, const float *, float *, int, size_t);
static const rows_fn ROWS_FN[MAX_ROWS + 1] = {NULL, rows1, rows2, rows3, rows4, rows5, rows6};


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
