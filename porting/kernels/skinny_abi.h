/* The compiled kernels' entry points, declared once: one line per function, its name, its return
 * type, its parameters' types.
 *
 * Every source file includes this and declares them all from it, so a definition that differs from
 * its line does not compile ("conflicting types"). skinny_signatures() (skinny.c) gives the same
 * table as text, each type reduced to a ctypes code (p: a pointer, i: int, f: float, v: void), and
 * porting/kernels/native.py sets every function's argtypes and restype from that text: how Python
 * calls C is written here and nowhere else. (struct layer's fields are checked by skinny_abi.) */
#ifndef SKINNY_ABI_H
#define SKINNY_ABI_H

#include <stdint.h>

struct layer;
struct decoder;

#define SKINNY_ENTRY_POINTS(X) \
    X(skinny_linear, void, const float *, const float *, const float *, float *, int, int, int) \
    X(skinny_linear_threads, void, const float *, const float *, const float *, float *, int, int, int, void *, void *, \
      int) \
    X(skinny_attention, void, const float *, const float *, const float *, const float *, float *, int, int, int, int, \
      int) \
    X(skinny_embed, int, const int64_t *, int, const float *, int, int, float, const float *, float *) \
    X(skinny_activation_supported, int, int) \
    X(skinny_abi, int, int64_t *) \
    X(skinny_decoder_layers, int, const struct layer *, int, float *, int, int, const float *, int, \
      const int64_t *, float *, const float *const *, const float *const *, const float *, int, int, void *, \
      void *, int) \
    X(skinny_encoder_layers, int, const struct layer *, int, float *, int, const int64_t *, int, int, const float *, \
      void *, void *, int) \
    X(skinny_candidates, int, const float *, const float *, const float *, int, int, int, const float *, int, int, int, \
      int, int, float, int, const int64_t *, float *, int64_t *, void *, void *, int) \
    X(skinny_layer_norm, void, const float *, float *, int, int, const float *, const float *, float) \
    X(skinny_search_abi, int, int64_t *) \
    X(skinny_search, int, const struct decoder *, float *const *, float *const *, float *, int, int, int, const int *, \
      int, float, int, int, const int64_t *, int, int64_t *, float *, float *, int *, int *, void *, void *, int)

#define SKINNY_DECLARE(name, ret, ...) ret name(__VA_ARGS__);
SKINNY_ENTRY_POINTS(SKINNY_DECLARE)

/* The table as text (see above); the one entry point outside it. */
const char *skinny_signatures(void);

#endif
