// GELU(x + b) as a ggml custom op; see gelu.h.
#include "gelu.h"

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "simd-math.h"

namespace {

#if defined(__x86_64__)
// vectors [v0, v1) of the flattened rows, 8 values each (n is a multiple of 8)
XGLM_AVX2 void gelu_bias_range(const float * x, const float * b, float * y, int64_t n, int64_t v0, int64_t v1) {
    for (int64_t v = v0; v < v1; ++v) {
        const int64_t i = v * 8;
        const __m256  a = _mm256_add_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(b + i % n));
        _mm256_storeu_ps(y + i, xglm_gelu_erf_8(a));
    }
}
#endif

// thread ith of nth: a contiguous share of the 8-value vectors (whole cache lines)
void gelu_bias_op(ggml_tensor * dst, int ith, int nth, void * /*userdata*/) {
#if defined(__x86_64__)
    const ggml_tensor * x     = dst->src[0];
    const ggml_tensor * b     = dst->src[1];
    const int64_t       n     = x->ne[0];
    const int64_t       n_vec = ggml_nelements(x) / 8;
    const int64_t       per   = (n_vec / nth + 1 + 1) & ~int64_t(1);
    const int64_t       v0    = std::min(n_vec, per * ith);
    const int64_t       v1    = ith == nth - 1 ? n_vec : std::min(n_vec, v0 + per);
    gelu_bias_range(static_cast<const float *>(x->data), static_cast<const float *>(b->data), static_cast<float *>(dst->data),
                    n, v0, v1);
#else
    (void)dst, (void)ith, (void)nth;
#endif
}

}  // namespace

bool xglm_gelu_bias_usable(const ggml_tensor * x, const ggml_tensor * b) {
    return x->type == GGML_TYPE_F32 && ggml_is_contiguous(x) && x->ne[0] % 8 == 0 && b->type == GGML_TYPE_F32 &&
           ggml_is_contiguous(b) && ggml_nelements(b) == x->ne[0];
}

ggml_tensor * xglm_gelu_bias(ggml_context * ctx, ggml_tensor * x, ggml_tensor * b) {
    ggml_tensor * args[] = {x, b};
    return ggml_custom_4d(ctx, GGML_TYPE_F32, x->ne[0], x->ne[1], x->ne[2], x->ne[3], args, 2, gelu_bias_op, GGML_N_TASKS_MAX,
                          nullptr);
}
