// Attention over an F16 KV cache as a ggml custom op; see attention.h for why.
#include "attention.h"

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace {

constexpr uint16_t f16_minus_inf = 0xFC00;

// ggml's flash attention takes its tiled path from this many query rows on (GGML_FA_TILE_Q)
constexpr int64_t ggml_tiled_from = 64;

bool disabled_by_env() {
    const char * v = std::getenv("XGLM_NO_CUSTOM_ATTN");
    return v != nullptr && v[0] != '\0' && std::strcmp(v, "0") != 0;
}

bool cpu_has_avx2_fma_f16c() {
#if defined(__x86_64__)
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
#else
    return false;
#endif
}

// the scale travels in the op's userdata pointer (custom ops have no float parameters)
void * scale_to_userdata(float scale) {
    uintptr_t bits = 0;
    std::memcpy(&bits, &scale, sizeof scale);
    return reinterpret_cast<void *>(bits);
}

float scale_from_userdata(void * userdata) {
    const auto bits = reinterpret_cast<uintptr_t>(userdata);
    float      scale;
    std::memcpy(&scale, &bits, sizeof scale);
    return scale;
}

#if defined(__x86_64__)

#define XGLM_AVX2 __attribute__((target("avx2,fma,f16c")))

XGLM_AVX2 inline float hsum_8(__m256 x) {
    __m128 r = _mm_add_ps(_mm256_extractf128_ps(x, 1), _mm256_castps256_ps128(x));
    r        = _mm_add_ps(r, _mm_movehl_ps(r, r));
    r        = _mm_add_ss(r, _mm_movehdup_ps(r));
    return _mm_cvtss_f32(r);
}

// exp(x) for x <= 0, eight at a time: x = n·ln2 + r with |r| <= ln2/2, exp(r) by its Taylor
// series to r^7 (relative error ~1e-7), 2^n in the exponent bits. Clamped at -87.
XGLM_AVX2 inline __m256 exp_nonpositive_8(__m256 x) {
    x              = _mm256_max_ps(x, _mm256_set1_ps(-87.0f));
    const __m256 t = _mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504f), _mm256_set1_ps(12582912.0f));
    const __m256 n = _mm256_sub_ps(t, _mm256_set1_ps(12582912.0f));
    __m256       r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r              = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p       = _mm256_set1_ps(1.0f / 5040.0f);
    p              = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 720.0f));
    p              = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120.0f));
    p              = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24.0f));
    p              = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6.0f));
    p              = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p              = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p              = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

XGLM_AVX2 inline __m256 load_f16_8(const uint16_t * p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i *>(p)));
}

// Per-thread scratch: the scores and cell indices of one row's visible cells.
struct scratch {
    std::vector<float>   score;
    std::vector<int32_t> cell;
};

// One (head, token) row; NV = head_dim / 8. k and v point at the head's slice of cell 0.
template <int NV>
XGLM_AVX2 void attend_row(const float * q, const uint16_t * k, size_t k_stride, const uint16_t * v, size_t v_stride,
                          const uint16_t * mask, int64_t n_kv, float scale, scratch & s, float * out) {
    __m256 qv[NV];
    for (int j = 0; j < NV; ++j) qv[j] = _mm256_mul_ps(_mm256_loadu_ps(q + 8 * j), _mm256_set1_ps(scale));

    // 1. scores of the visible cells, in cell order
    float * score = s.score.data();
    int32_t * cell = s.cell.data();
    int64_t   m    = 0;
    float     mx   = -INFINITY;
    for (int64_t c = 0; c < n_kv; ++c) {
        const uint16_t mb = mask[c];
        if (mb == f16_minus_inf) continue;
        const uint16_t * kr = k + c * k_stride;
        __m256           a0 = _mm256_mul_ps(qv[0], load_f16_8(kr));
        __m256           a1 = _mm256_mul_ps(qv[1], load_f16_8(kr + 8));
        for (int j = 2; j < NV; j += 2) {
            a0 = _mm256_fmadd_ps(qv[j], load_f16_8(kr + 8 * j), a0);
            a1 = _mm256_fmadd_ps(qv[j + 1], load_f16_8(kr + 8 * j + 8), a1);
        }
        float sc = hsum_8(_mm256_add_ps(a0, a1));
        if (mb != 0) sc += _cvtsh_ss(mb);
        score[m] = sc;
        cell[m]  = static_cast<int32_t>(c);
        mx       = sc > mx ? sc : mx;
        ++m;
    }
    if (m == 0 || !(mx > -INFINITY)) {
        for (int j = 0; j < NV; ++j) _mm256_storeu_ps(out + 8 * j, _mm256_setzero_ps());
        return;
    }

    // 2. probabilities (unnormalized) and their sum, eight lanes by visible-cell index
    const __m256 vmx = _mm256_set1_ps(mx);
    __m256       sum = _mm256_setzero_ps();
    int64_t      i   = 0;
    for (; i + 8 <= m; i += 8) {
        const __m256 p = exp_nonpositive_8(_mm256_sub_ps(_mm256_loadu_ps(score + i), vmx));
        _mm256_storeu_ps(score + i, p);
        sum = _mm256_add_ps(sum, p);
    }
    if (i < m) {
        alignas(32) float tail[8];
        for (int l = 0; l < 8; ++l) tail[l] = i + l < m ? score[i + l] - mx : 0.0f;
        _mm256_store_ps(tail, exp_nonpositive_8(_mm256_load_ps(tail)));
        for (int l = 0; l < 8; ++l) {
            if (i + l >= m) tail[l] = 0.0f;
            else score[i + l] = tail[l];
        }
        sum = _mm256_add_ps(sum, _mm256_load_ps(tail));
    }

    // 3. Σ p·v in F32, then the division
    __m256 acc[NV];
    for (int j = 0; j < NV; ++j) acc[j] = _mm256_setzero_ps();
    for (int64_t r = 0; r < m; ++r) {
        const __m256     p  = _mm256_set1_ps(score[r]);
        const uint16_t * vr = v + static_cast<int64_t>(cell[r]) * v_stride;
        for (int j = 0; j < NV; ++j) acc[j] = _mm256_fmadd_ps(load_f16_8(vr + 8 * j), p, acc[j]);
    }
    const __m256 inv = _mm256_set1_ps(1.0f / hsum_8(sum));
    for (int j = 0; j < NV; ++j) _mm256_storeu_ps(out + 8 * j, _mm256_mul_ps(acc[j], inv));
}

using row_fn = void (*)(const float *, const uint16_t *, size_t, const uint16_t *, size_t, const uint16_t *, int64_t, float,
                        scratch &, float *);

row_fn row_kernel(int64_t head_dim) {
    switch (head_dim) {
        case 16:  return attend_row<2>;
        case 32:  return attend_row<4>;
        case 64:  return attend_row<8>;
        case 128: return attend_row<16>;
        default:  return nullptr;
    }
}

#endif  // __x86_64__

void attention_op(ggml_tensor * dst, int ith, int nth, void * userdata) {
#if defined(__x86_64__)
    const ggml_tensor * q    = dst->src[0];
    const ggml_tensor * k    = dst->src[1];
    const ggml_tensor * v    = dst->src[2];
    const ggml_tensor * mask = dst->src[3];
    const int64_t       head_dim = q->ne[0];
    const int64_t       n_tokens = q->ne[1];
    const int64_t       n_head   = q->ne[2];
    const int64_t       n_kv     = k->ne[1];
    const float         scale    = scale_from_userdata(userdata);
    const row_fn        kernel   = row_kernel(head_dim);

    thread_local scratch s;
    if (static_cast<int64_t>(s.score.size()) < n_kv) {
        s.score.resize(n_kv);
        s.cell.resize(n_kv);
    }
    auto row = [&](int64_t t, int64_t h) {
        const auto * qr = reinterpret_cast<const float *>(static_cast<const char *>(q->data) + t * q->nb[1] + h * q->nb[2]);
        const auto * kr = reinterpret_cast<const uint16_t *>(static_cast<const char *>(k->data) + h * k->nb[2]);
        const auto * vr = reinterpret_cast<const uint16_t *>(static_cast<const char *>(v->data) + h * v->nb[2]);
        const auto * mr = reinterpret_cast<const uint16_t *>(static_cast<const char *>(mask->data) + t * mask->nb[1]);
        auto *       o  = reinterpret_cast<float *>(static_cast<char *>(dst->data) + t * dst->nb[2] + h * dst->nb[1]);
        kernel(qr, kr, k->nb[1] / sizeof(uint16_t), vr, v->nb[1] / sizeof(uint16_t), mr, n_kv, scale, s, o);
    };
    if (n_tokens == 1) {
        // one token: each thread a contiguous run of heads (adjacent bytes of every cell)
        const int64_t h0 = n_head * ith / nth;
        const int64_t h1 = n_head * (ith + 1) / nth;
        for (int64_t h = h0; h < h1; ++h) row(0, h);
    } else {
        // several tokens: every nth token, all heads (causal rows grow with the token)
        for (int64_t t = ith; t < n_tokens; t += nth) {
            for (int64_t h = 0; h < n_head; ++h) row(t, h);
        }
    }
#else
    (void)dst, (void)ith, (void)nth, (void)userdata;
#endif
}

}  // namespace

bool xglm_attention_usable(const ggml_tensor * q, const ggml_tensor * k, const ggml_tensor * v, const ggml_tensor * mask) {
#if defined(__x86_64__)
    const int64_t d = q->ne[0];
    return q->ne[1] < ggml_tiled_from && row_kernel(d) != nullptr && q->type == GGML_TYPE_F32 && q->nb[0] == sizeof(float) && k->type == GGML_TYPE_F16 &&
           v->type == GGML_TYPE_F16 && k->ne[0] == d && v->ne[0] == d && k->nb[0] == 2 && v->nb[0] == 2 &&
           k->ne[1] == v->ne[1] && k->ne[2] == q->ne[2] && v->ne[2] == q->ne[2] && k->nb[1] % 2 == 0 && v->nb[1] % 2 == 0 &&
           k->ne[3] == 1 && v->ne[3] == 1 && q->ne[3] == 1 && mask != nullptr && mask->type == GGML_TYPE_F16 &&
           mask->nb[0] == 2 && mask->ne[0] == k->ne[1] && mask->ne[1] >= q->ne[1] && cpu_has_avx2_fma_f16c() &&
           !disabled_by_env();
#else
    (void)q, (void)k, (void)v, (void)mask;
    return false;
#endif
}

ggml_tensor * xglm_attention(ggml_context * ctx, ggml_tensor * q, ggml_tensor * k, ggml_tensor * v, ggml_tensor * mask,
                             float scale) {
    ggml_tensor * args[] = {q, k, v, mask};
    return ggml_custom_4d(ctx, GGML_TYPE_F32, q->ne[0], q->ne[2], q->ne[1], 1, args, 4, attention_op, GGML_N_TASKS_MAX,
                          scale_to_userdata(scale));
}
