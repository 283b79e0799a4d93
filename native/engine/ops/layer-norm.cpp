// Layer norm of one row with ggml's arithmetic; see layer-norm.h. Built with -ffp-contract=off
// (CMakeLists.txt): ggml computes (x − mean)·scale, ·w and +b as separate nodes, each rounded,
// and a fused multiply-add would round once.
#include "layer-norm.h"

#include <cmath>

#include "simd-math.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace {

// ggml_vec_cvar_f32's scalar loop over [i, n): y = x − mean, each square added to `sum` in turn.
double centered_tail(const float * x, float mean, int64_t i, int64_t n, float * y, double sum) {
    for (; i < n; ++i) {
        float val = x[i] - mean;
        y[i]      = val;
        val *= val;
        sum += static_cast<double>(val);
    }
    return sum;
}

// ggml_vec_cvar_f32: y = x − mean; returns Σ (x − mean)² / n, each 8-lane square summed in
// float (hsum order: high half + low half, then pairs) and added to a double.
#if defined(__x86_64__)
__attribute__((target("avx2,fma"))) double centered_var_avx2(const float * x, float mean, int64_t n, float * y) {
    double  sum = 0;
    int64_t i   = 0;
    for (; i + 7 < n; i += 8) {
        __m256 val = _mm256_sub_ps(_mm256_loadu_ps(x + i), _mm256_set1_ps(mean));
        _mm256_storeu_ps(y + i, val);
        val         = _mm256_mul_ps(val, val);
        __m128 val2 = _mm_add_ps(_mm256_extractf128_ps(val, 1), _mm256_castps256_ps128(val));
        val2        = _mm_add_ps(val2, _mm_movehl_ps(val2, val2));
        val2        = _mm_add_ss(val2, _mm_movehdup_ps(val2));
        sum += static_cast<double>(_mm_cvtss_f32(val2));
    }
    return centered_tail(x, mean, i, n, y, sum) / static_cast<double>(n);
}

// ggml's AVX-512 build of the same function (AVX512F and DQ): 16 lanes, each block's squares
// summed by _mm512_reduce_add_ps, then the scalar tail.
__attribute__((target("avx512f,avx512dq"))) double centered_var_avx512(const float * x, float mean, int64_t n, float * y) {
    double  sum = 0;
    int64_t i   = 0;
    for (; i + 15 < n; i += 16) {
        const __m512 val = _mm512_sub_ps(_mm512_loadu_ps(x + i), _mm512_set1_ps(mean));
        _mm512_storeu_ps(y + i, val);
        sum += static_cast<double>(_mm512_reduce_add_ps(_mm512_mul_ps(val, val)));
    }
    return centered_tail(x, mean, i, n, y, sum) / static_cast<double>(n);
}
#endif

double centered_var_scalar(const float * x, float mean, int64_t n, float * y) {
    return centered_tail(x, mean, 0, n, y, 0.0) / static_cast<double>(n);
}

}  // namespace

void xglm_layer_norm_row(const float * x, const float * w, const float * b, float eps, int64_t n, float * y,
                         xglm_kernel_isa isa) {
    // ggml_vec_sum_f32: a double sum, rounded to float; the mean divides in float
    double s = 0.0;
    for (int64_t i = 0; i < n; ++i) s += static_cast<double>(x[i]);
    const float mean = static_cast<float>(s) / static_cast<float>(n);
#if defined(__x86_64__)
    // the path ggml's norm takes in the variant in use (the ops that call this run only with AVX2)
    const float           variance = static_cast<float>(isa == xglm_kernel_isa::avx512 ? centered_var_avx512(x, mean, n, y)
                                                        : isa == xglm_kernel_isa::avx2   ? centered_var_avx2(x, mean, n, y)
                                                                                         : centered_var_scalar(x, mean, n, y));
#else
    (void)isa;
    const float variance = static_cast<float>(centered_var_scalar(x, mean, n, y));
#endif
    const float scale = 1.0f / std::sqrt(variance + eps);
    for (int64_t i = 0; i < n; ++i) {
        float v = y[i] * scale;  // ggml_vec_scale_f32
        v       = v * w[i];      // ggml_mul
        y[i]    = v + b[i];      // ggml_add
    }
}
