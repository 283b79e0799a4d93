// AVX2 math shared by the custom ops (attention.cpp, decode-gemv.cpp, gelu.cpp). Each function
// carries its own target attribute, so callers need no -mavx2; they run only where the kernel
// plan (kernel-plan.h) enabled their op, i.e. on a ggml CPU variant that runs AVX2 code.
#pragma once

#include <initializer_list>

#if defined(__x86_64__)
#include <immintrin.h>

#define XGLM_AVX2 __attribute__((target("avx2,fma,f16c")))
// AVX-512 with VNNI (and VL/BW, which every VNNI ggml variant has), on top of AVX2
#define XGLM_AVX512_VNNI __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")))
// Around AVX-512 code: GCC 12 warns that the _mm512_undefined_* its own headers pass to masked
// builtins (_mm512_srli_epi64, _mm512_cvtepi64_epi32, _mm512_extractf32x8_ps …) may be (or is)
// used uninitialized, a false positive
#if defined(__GNUC__) && !defined(__clang__)
#define XGLM_AVX512_BEGIN                                                 \
    _Pragma("GCC diagnostic push") _Pragma("GCC diagnostic ignored \"-Wmaybe-uninitialized\"") \
        _Pragma("GCC diagnostic ignored \"-Wuninitialized\"")
#define XGLM_AVX512_END   _Pragma("GCC diagnostic pop")
#else
#define XGLM_AVX512_BEGIN
#define XGLM_AVX512_END
#endif

// The sum of 8 floats in ggml's hsum_float_8 order (quants.c), so row sums match mul_mat's.
XGLM_AVX2 inline float xglm_hsum_8(__m256 x) {
    __m128 r = _mm_add_ps(_mm256_extractf128_ps(x, 1), _mm256_castps256_ps128(x));
    r        = _mm_add_ps(r, _mm_movehl_ps(r, r));
    r        = _mm_add_ss(r, _mm_movehdup_ps(r));
    return _mm_cvtss_f32(r);
}

// exp(x) for x <= 0, eight at a time: x = n·ln2 + r with |r| <= ln2/2, exp(r) by its Taylor
// series to r^7 (relative error ~1e-7), 2^n in the exponent bits. Clamped at -87 (exp(-87) ≈
// 1.6e-38 where the true value would be smaller).
XGLM_AVX2 inline __m256 xglm_exp_nonpositive_8(__m256 x) {
    x              = _mm256_max_ps(x, _mm256_set1_ps(-87.0f));
    const __m256 t = _mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504f), _mm256_set1_ps(12582912.0f));
    const __m256 n = _mm256_sub_ps(t, _mm256_set1_ps(12582912.0f));
    __m256       r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r              = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p       = _mm256_set1_ps(1.0f / 5040.0f);
    for (float c : {1.0f / 720.0f, 1.0f / 120.0f, 1.0f / 24.0f, 1.0f / 6.0f, 0.5f, 1.0f, 1.0f}) {
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
    }
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

// GELU with the exact erf, 0.5·x·(1 + erf(x/√2)), eight at a time. erf by Abramowitz & Stegun
// 7.1.26 (|error| < 1.5e-7): 1 − t·(a1 + t·(a2 + …))·exp(−z²), t = 1/(1 + p·z), z = |x|/√2.
// Within ~2.5e-7·|x|/2 of ggml's gelu_erf, which calls libm's erff one element at a time.
XGLM_AVX2 inline __m256 xglm_gelu_erf_8(__m256 x) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    const __m256 z    = _mm256_mul_ps(_mm256_andnot_ps(sign, x), _mm256_set1_ps(0.70710678f));
    const __m256 t    = _mm256_div_ps(_mm256_set1_ps(1.0f), _mm256_fmadd_ps(z, _mm256_set1_ps(0.3275911f), _mm256_set1_ps(1.0f)));
    __m256       poly = _mm256_set1_ps(1.061405429f);
    poly              = _mm256_fmadd_ps(poly, t, _mm256_set1_ps(-1.453152027f));
    poly              = _mm256_fmadd_ps(poly, t, _mm256_set1_ps(1.421413741f));
    poly              = _mm256_fmadd_ps(poly, t, _mm256_set1_ps(-0.284496736f));
    poly              = _mm256_fmadd_ps(poly, t, _mm256_set1_ps(0.254829592f));
    poly              = _mm256_mul_ps(poly, t);
    const __m256 erf_abs =
        _mm256_fnmadd_ps(poly, xglm_exp_nonpositive_8(_mm256_mul_ps(_mm256_xor_ps(z, sign), z)), _mm256_set1_ps(1.0f));
    const __m256 erf = _mm256_or_ps(erf_abs, _mm256_and_ps(x, sign));  // erf is odd
    return _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), x), _mm256_add_ps(_mm256_set1_ps(1.0f), erf));
}

#endif  // __x86_64__
