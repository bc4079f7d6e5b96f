/* Fused CPU kernels for the streaming engine, called through ctypes (the GIL is released).
 *
 * Each kernel reads the base and fine-tuned tensors once, in their stored dtype, does the
 * arithmetic in float32 block by block, rounds once to the output dtype, and measures on
 * the way what the engine would otherwise need extra passes for: ||tau_MTL||^2,
 * ||out - base||^2 and whether every input value is finite. The torch code in
 * hf_lines/methods computes the same float32 operations in the same order (see each kernel's
 * comment for its formula), so the outputs are byte-identical to it
 * (tests/test_one_arithmetic.py).
 *
 * Determinism: -ffp-contract=off (no FMA contraction) and fixed 16-lane partial sums, so
 * every ISA clone gives the same bytes. The torch side must avoid FMA on its own: ATen's
 * vectorized add/sub with alpha != 1, addcmul and lerp use fused multiply-add.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define HOT __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define HOT
#endif

#define BLK 512   /* entries per block: the float32 temporaries of 64 tasks stay in L2 */
#define LANES 16
#define VL 16  /* lanes of the vector type below */
#define PREFETCH_BLOCKS 4  /* TIES reads this many blocks ahead (10% faster when the inputs come from DRAM) */
/* GCC/clang vector extensions: one 16-lane float vector (two AVX2 or one AVX-512 register) */
typedef float vf __attribute__((vector_size(64), aligned(64)));
typedef int32_t vi __attribute__((vector_size(64), aligned(64)));
#define VALIGN __attribute__((aligned(64)))
static inline vf vabs(vf x) { return (vf)((vi)x & 0x7fffffff); }
#define MAX_TASKS 64

enum { DT_F32 = 0, DT_BF16 = 1, DT_F16 = 2 };

/* ------------------------------------------------------------------ conversions */
static inline float bf16_to_f32(uint16_t h) {
    union { uint32_t u; float f; } x;
    x.u = (uint32_t)h << 16;
    return x.f;
}

static inline uint16_t f32_to_bf16(float f) {  /* round to nearest even, NaN -> 0x7FC0 (as c10::BFloat16) */
    union { uint32_t u; float f; } x;
    x.f = f;
    uint32_t u = x.u;
    if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fc0;
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

static inline float f32_to_f32(float f) { return f; }

/* float16 <-> float32 as c10::Half does it (fp16_ieee_to_fp32_value / fp16_ieee_from_fp32_value):
 * branch-free float arithmetic that vectorizes, exact, round to nearest even. */
static inline float bits_float(uint32_t u) {
    union { uint32_t u; float f; } x;
    x.u = u;
    return x.f;
}

static inline uint32_t float_bits(float f) {
    union { uint32_t u; float f; } x;
    x.f = f;
    return x.u;
}

static inline float f16_to_f32(uint16_t h) {
    const uint32_t w = (uint32_t)h << 16;
    const uint32_t sign = w & 0x80000000u;
    const uint32_t two_w = w + w;
    const float normalized = bits_float((two_w >> 4) + (0xE0u << 23)) * 0x1.0p-112f;
    const float denormalized = bits_float((two_w >> 17) | (126u << 23)) - 0.5f;
    const uint32_t result = sign | (two_w < (1u << 27) ? float_bits(denormalized) : float_bits(normalized));
    return bits_float(result);
}

static inline uint16_t f32_to_f16(float f) {
    float base = (fabsf(f) * 0x1.0p+112f) * 0x1.0p-110f;
    const uint32_t w = float_bits(f);
    const uint32_t shl1_w = w + w;
    const uint32_t sign = w & 0x80000000u;
    uint32_t bias = shl1_w & 0xFF000000u;
    if (bias < 0x71000000u) bias = 0x71000000u;
    base = bits_float((bias >> 1) + 0x07800000u) + base;
    const uint32_t bits = float_bits(base);
    const uint32_t exp_bits = (bits >> 13) & 0x00007C00u;
    const uint32_t mantissa_bits = bits & 0x00000FFFu;
    const uint32_t nonsign = exp_bits + mantissa_bits;
    return (uint16_t)((sign >> 16) | (shl1_w > 0xFF000000u ? 0x7E00u : nonsign));
}


/* Sum of squares of x[0..len) in double, through 16 float lanes (vectorizes, same result on every ISA). */
static inline double sumsq(const float *x, int64_t len) {
    float lane[LANES] = {0};
    int64_t j = 0;
    for (; j + LANES <= len; j += LANES)
        for (int k = 0; k < LANES; k++) lane[k] += x[j + k] * x[j + k];
    double s = 0.0;
    for (int k = 0; k < LANES; k++) s += lane[k];
    for (; j < len; j++) s += (double)x[j] * x[j];
    return s;
}

/* 0 when every value is finite, NaN otherwise: x - x is 0 for finite x and NaN for inf or NaN. */
static inline float nonfinite_probe(const float *x, int64_t len) {
    float lane[LANES] = {0};
    int64_t j = 0;
    for (; j + LANES <= len; j += LANES)
        for (int k = 0; k < LANES; k++) lane[k] += x[j + k] - x[j + k];
    float s = 0.0f;
    for (int k = 0; k < LANES; k++) s += lane[k];
    for (; j < len; j++) s += x[j] - x[j];
    return s;
}

#define T float
#define LOAD f32_to_f32
#define STORE f32_to_f32
#define NAME f32
#include "_kernels_impl.h"
#undef T
#undef LOAD
#undef STORE
#undef NAME

#define T uint16_t
#define LOAD bf16_to_f32
#define STORE f32_to_bf16
#define NAME bf16
#include "_kernels_impl.h"
#undef LOAD
#undef STORE
#undef NAME

#define LOAD f16_to_f32
#define STORE f32_to_f16
#define NAME f16
#include "_kernels_impl.h"
#undef T
#undef LOAD
#undef STORE
#undef NAME

/* ------------------------------------------------------------------ exported entry points */
/* Each returns 0 (or a count) on success, -2 when out of memory, -3 for an unsupported dtype or task count. */

#define DISPATCH(dt, fn, ...)                                         \
    switch (dt) {                                                     \
    case DT_F32: fn##_f32((const float *)__VA_ARGS__); break;         \
    case DT_BF16: fn##_bf16((const uint16_t *)__VA_ARGS__); break;    \
    case DT_F16: fn##_f16((const uint16_t *)__VA_ARGS__); break;      \
    default: return -3;                                               \
    }

int hfl_dtypes(void) { return 7; } /* bit mask of the supported DT_* codes */

int hfl_lerp(int dt, const void *b, const void *m, void *o, int64_t n, float s, double *stats) {
    DISPATCH(dt, lerp, b, m, o, n, s, stats);
    return 0;
}

int hfl_wsum(int dt, const void *b, const void *const *m, const float *w, int nt, void *o, int64_t n, float s,
             double *stats) {
    if (nt < 1 || nt > MAX_TASKS) return -3;
    DISPATCH(dt, wsum, b, (const void *)m, w, nt, o, n, s, stats);
    return 0;
}

int hfl_ties_hist(int dt, const void *b, const void *const *m, const float *w, int nt, int64_t n, int shift,
                  int64_t *counts, int64_t *inexact, uint32_t *sub, double *stats) {
    if (nt < 1 || nt > MAX_TASKS || shift < 1 || shift > 30) return -3;
    DISPATCH(dt, ties_hist, b, (const void *)m, w, nt, n, shift, counts, inexact, sub, stats);
    return 0;
}

int hfl_ties_hist_low(int dt, const void *b, const void *m, float w, int64_t n, int shift, int64_t bin, int64_t *low) {
    if (shift < 1 || shift > 30) return -3;
    DISPATCH(dt, ties_hist_low, b, m, w, n, shift, bin, low);
    return 0;
}

/* TIES over entries [0, n): amb ((n + 7) / 8 bytes, zeroed) and negv (n + BLK floats) are the
 * caller's, pos_stats[2] receives the norms of the flagged entries' positive merge. Returns how many
 * entries were flagged; the caller settles them (hfl_ties_settle) once the sign total of the whole
 * tensor is known, or else adds pos_stats to stats. */
int64_t hfl_ties_merge(int dt, const void *b, const void *const *m, const float *w, int nt, const float *thr, int64_t n,
                       float s, int mean, void *o, double *stats, int64_t *sign_total, uint8_t *amb, float *negv,
                       double *pos_stats) {
    int64_t r = -3;
    if (nt < 1 || nt > MAX_TASKS) return -3;
    float *mts = (float *)aligned_alloc(64, sizeof(float) * BLK * (size_t)nt);
    if (!mts) return -2;
    int64_t total = 0;
#define TIES_CASE(code, suffix, TT)                                                                            \
    case code:                                                                                                 \
        r = ties_merge_##suffix((const TT *)b, (const TT *const *)m, w, nt, thr, n, s, mean, (TT *)o, stats,    \
                                &total, amb, negv, pos_stats, mts);                                            \
        break;
    switch (dt) {
        TIES_CASE(DT_F32, f32, float)
        TIES_CASE(DT_BF16, bf16, uint16_t)
        TIES_CASE(DT_F16, f16, uint16_t)
    }
#undef TIES_CASE
    *sign_total = total;
    free(mts);
    return r;
}

/* The flagged entries of hfl_ties_merge get their negative merge: out = base + s * negv[k]. */
int hfl_ties_settle(int dt, const void *b, void *o, int64_t n, float s, const uint8_t *amb, const float *negv,
                    double *stats) {
    DISPATCH(dt, ties_settle, b, o, n, s, amb, negv, stats);
    return 0;
}

/* An importable module, so the shared library is found like any extension; its functions go through ctypes. */
static struct PyModuleDef native_module = {
    PyModuleDef_HEAD_INIT, "_native", "Fused LiNeS kernels (called through ctypes).", -1, NULL, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__native(void) { return PyModule_Create(&native_module); }
