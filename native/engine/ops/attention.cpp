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

#include "simd-math.h"

namespace {

constexpr uint16_t f16_minus_inf = 0xFC00;

// ggml's flash attention takes its tiled path from this many query rows on (GGML_FA_TILE_Q)
constexpr int64_t ggml_tiled_from = 64;

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

XGLM_AVX2 inline __m256 load_f16_8(const uint16_t * p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i *>(p)));
}

// How many cells ahead the score loop asks for K and V bytes (prefetching past the cache's end
// is harmless: _mm_prefetch does not fault).
constexpr int64_t prefetch_cells = 8;

// Per-thread scratch: per head, the scores of the visible cells; the visible cells' indices;
// the scaled queries and the V accumulators of the heads.
struct scratch {
    std::vector<float>   score;
    std::vector<int32_t> cell;
    std::vector<float>   q, acc, mx;
};

// The (head, token) rows of one token for heads [h0, h0 + nh); NV = head_dim / 8. q points at
// head h0's query, k and v at head h0's slice of cell 0, out at head h0's output; the *_head
// strides step one head (in elements), k_stride and v_stride one cell. Cells are the outer
// loop, so each cell's K and V slices of all nh heads are read once, as one contiguous run.
// Per head the arithmetic is that of a head alone: scores in cell order, one max, exp and a sum
// in eight lanes by visible-cell index, then Σ p·v in cell order, divided by the sum.
template <int NV>
XGLM_AVX2 void attend_heads(const float * q, int64_t q_head, const uint16_t * k, int64_t k_head, size_t k_stride,
                            const uint16_t * v, int64_t v_head, size_t v_stride, const uint16_t * mask, int64_t n_kv,
                            float scale, int64_t nh, scratch & s, float * out, int64_t out_head) {
    constexpr int D = 8 * NV;
    if (static_cast<int64_t>(s.score.size()) < nh * n_kv) s.score.resize(nh * n_kv);
    if (static_cast<int64_t>(s.cell.size()) < n_kv) s.cell.resize(n_kv);
    if (static_cast<int64_t>(s.q.size()) < nh * D) s.q.resize(nh * D), s.acc.resize(nh * D), s.mx.resize(nh);
    float *   qs    = s.q.data();
    float *   acc   = s.acc.data();
    float *   mx    = s.mx.data();
    float *   score = s.score.data();
    int32_t * cell  = s.cell.data();
    for (int64_t j = 0; j < nh; ++j) {
        for (int i = 0; i < NV; ++i) {
            _mm256_storeu_ps(qs + j * D + 8 * i, _mm256_mul_ps(_mm256_loadu_ps(q + j * q_head + 8 * i), _mm256_set1_ps(scale)));
            _mm256_storeu_ps(acc + j * D + 8 * i, _mm256_setzero_ps());
        }
        mx[j] = -INFINITY;
    }
    const size_t run_bytes = static_cast<size_t>((nh - 1) * k_head + D) * sizeof(uint16_t);

    // 1. scores of the visible cells, in cell order
    int64_t m = 0;
    for (int64_t c = 0; c < n_kv; ++c) {
        const uint16_t mb = mask[c];
        if (mb == f16_minus_inf) continue;
        const uint16_t * kr      = k + c * k_stride;
        const char *     ahead_k = reinterpret_cast<const char *>(kr + prefetch_cells * k_stride);
        const char *     ahead_v = reinterpret_cast<const char *>(v + (c + prefetch_cells) * v_stride);
        for (size_t b = 0; b < run_bytes; b += 64) {
            _mm_prefetch(ahead_k + b, _MM_HINT_T0);
            _mm_prefetch(ahead_v + b, _MM_HINT_T0);
        }
        for (int64_t j = 0; j < nh; ++j) {
            const uint16_t * kh = kr + j * k_head;
            const float *    qh = qs + j * D;
            __m256           a0 = _mm256_mul_ps(_mm256_loadu_ps(qh), load_f16_8(kh));
            __m256           a1 = _mm256_mul_ps(_mm256_loadu_ps(qh + 8), load_f16_8(kh + 8));
            for (int i = 2; i < NV; i += 2) {
                a0 = _mm256_fmadd_ps(_mm256_loadu_ps(qh + 8 * i), load_f16_8(kh + 8 * i), a0);
                a1 = _mm256_fmadd_ps(_mm256_loadu_ps(qh + 8 * i + 8), load_f16_8(kh + 8 * i + 8), a1);
            }
            float sc = xglm_hsum_8(_mm256_add_ps(a0, a1));
            if (mb != 0) sc += _cvtsh_ss(mb);
            score[j * n_kv + m] = sc;
            mx[j]               = sc > mx[j] ? sc : mx[j];
        }
        cell[m++] = static_cast<int32_t>(c);
    }

    // 2. per head, probabilities (unnormalized) and their sum, eight lanes by visible-cell index
    for (int64_t j = 0; j < nh; ++j) {
        float * sj = score + j * n_kv;
        if (m == 0 || !(mx[j] > -INFINITY)) {
            mx[j] = 0.0f;  // no visible cell: the output is 0
            continue;
        }
        const __m256 vmx = _mm256_set1_ps(mx[j]);
        __m256       sum = _mm256_setzero_ps();
        int64_t      i   = 0;
        for (; i + 8 <= m; i += 8) {
            const __m256 p = xglm_exp_nonpositive_8(_mm256_sub_ps(_mm256_loadu_ps(sj + i), vmx));
            _mm256_storeu_ps(sj + i, p);
            sum = _mm256_add_ps(sum, p);
        }
        if (i < m) {
            alignas(32) float tail[8];
            for (int l = 0; l < 8; ++l) tail[l] = i + l < m ? sj[i + l] - mx[j] : 0.0f;
            _mm256_store_ps(tail, xglm_exp_nonpositive_8(_mm256_load_ps(tail)));
            for (int l = 0; l < 8; ++l) {
                if (i + l >= m) tail[l] = 0.0f;
                else sj[i + l] = tail[l];
            }
            sum = _mm256_add_ps(sum, _mm256_load_ps(tail));
        }
        mx[j] = 1.0f / xglm_hsum_8(sum);  // from here on: the head's 1/sum
    }

    // 3. Σ p·v in F32, cell by cell for all heads, then the division
    for (int64_t r = 0; r < m; ++r) {
        const uint16_t * vr = v + static_cast<int64_t>(cell[r]) * v_stride;
        for (int64_t j = 0; j < nh; ++j) {
            const __m256     p  = _mm256_set1_ps(score[j * n_kv + r]);
            const uint16_t * vh = vr + j * v_head;
            float *          a  = acc + j * D;
            for (int i = 0; i < NV; ++i) {
                _mm256_storeu_ps(a + 8 * i, _mm256_fmadd_ps(load_f16_8(vh + 8 * i), p, _mm256_loadu_ps(a + 8 * i)));
            }
        }
    }
    for (int64_t j = 0; j < nh; ++j) {
        const __m256 inv = _mm256_set1_ps(mx[j]);
        for (int i = 0; i < NV; ++i) _mm256_storeu_ps(out + j * out_head + 8 * i, _mm256_mul_ps(_mm256_loadu_ps(acc + j * D + 8 * i), inv));
    }
}

// Writes heads [h0, h1) of one token's K and V rows (F32) into cache cell `cell` as F16, rounded
// to nearest-even as ggml's set_rows does (F16C).
XGLM_AVX2 void store_heads(const float * k_row, const float * v_row, char * k_cell, char * v_cell, size_t k_head, size_t v_head,
                           int64_t head_dim, int64_t h0, int64_t h1) {
    for (int64_t h = h0; h < h1; ++h) {
        auto * kd = reinterpret_cast<uint16_t *>(k_cell + h * k_head);
        auto * vd = reinterpret_cast<uint16_t *>(v_cell + h * v_head);
        for (int64_t i = 0; i < head_dim; i += 8) {
            _mm_storeu_si128(reinterpret_cast<__m128i *>(kd + i),
                             _mm256_cvtps_ph(_mm256_loadu_ps(k_row + h * head_dim + i), _MM_FROUND_TO_NEAREST_INT));
            _mm_storeu_si128(reinterpret_cast<__m128i *>(vd + i),
                             _mm256_cvtps_ph(_mm256_loadu_ps(v_row + h * head_dim + i), _MM_FROUND_TO_NEAREST_INT));
        }
    }
}

using heads_fn = void (*)(const float *, int64_t, const uint16_t *, int64_t, size_t, const uint16_t *, int64_t, size_t,
                          const uint16_t *, int64_t, float, int64_t, scratch &, float *, int64_t);

heads_fn heads_kernel(int64_t head_dim) {
    switch (head_dim) {
        case 16:  return attend_heads<2>;
        case 32:  return attend_heads<4>;
        case 64:  return attend_heads<8>;
        case 128: return attend_heads<16>;
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
    const heads_fn      kernel   = heads_kernel(head_dim);

    thread_local scratch s;
    // tokens [t0, t1) with their heads [h0, h1)
    auto heads = [&](int64_t t, int64_t h0, int64_t h1) {
        const char * qb = static_cast<const char *>(q->data) + t * q->nb[1] + h0 * q->nb[2];
        const char * kb = static_cast<const char *>(k->data) + h0 * k->nb[2];
        const char * vb = static_cast<const char *>(v->data) + h0 * v->nb[2];
        const char * mb = static_cast<const char *>(mask->data) + t * mask->nb[1];
        char *       ob = static_cast<char *>(dst->data) + t * dst->nb[2] + h0 * dst->nb[1];
        kernel(reinterpret_cast<const float *>(qb), static_cast<int64_t>(q->nb[2] / sizeof(float)),
               reinterpret_cast<const uint16_t *>(kb), static_cast<int64_t>(k->nb[2] / sizeof(uint16_t)), k->nb[1] / sizeof(uint16_t),
               reinterpret_cast<const uint16_t *>(vb), static_cast<int64_t>(v->nb[2] / sizeof(uint16_t)), v->nb[1] / sizeof(uint16_t),
               reinterpret_cast<const uint16_t *>(mb), n_kv, scale, h1 - h0, s, reinterpret_cast<float *>(ob),
               static_cast<int64_t>(dst->nb[1] / sizeof(float)));
    };
    if (n_tokens == 1) {
        // one token: each thread a contiguous run of heads (one contiguous run of every cell)
        const int64_t h0 = n_head * ith / nth;
        const int64_t h1 = n_head * (ith + 1) / nth;
        if (dst->src[4] != nullptr) {
            // the token's own K and V go into its cell first: each thread writes the heads it reads
            const ggml_tensor * k_cur = dst->src[4];
            const ggml_tensor * v_cur = dst->src[5];
            const int64_t       cell  = *static_cast<const int64_t *>(dst->src[6]->data);
            store_heads(static_cast<const float *>(k_cur->data), static_cast<const float *>(v_cur->data),
                        static_cast<char *>(k->data) + cell * k->nb[1], static_cast<char *>(v->data) + cell * v->nb[1], k->nb[2],
                        v->nb[2], head_dim, h0, h1);
        }
        if (h1 > h0) heads(0, h0, h1);
    } else {
        // several tokens: every nth token, all heads (causal rows grow with the token)
        for (int64_t t = ith; t < n_tokens; t += nth) heads(t, 0, n_head);
    }
#else
    (void)dst, (void)ith, (void)nth, (void)userdata;
#endif
}

}  // namespace

bool xglm_attention_usable(const ggml_tensor * q, const ggml_tensor * k, const ggml_tensor * v, const ggml_tensor * mask) {
#if defined(__x86_64__)
    const int64_t d = q->ne[0];
    return q->ne[1] < ggml_tiled_from && heads_kernel(d) != nullptr && q->type == GGML_TYPE_F32 && q->nb[0] == sizeof(float) && k->type == GGML_TYPE_F16 &&
           v->type == GGML_TYPE_F16 && k->ne[0] == d && v->ne[0] == d && k->nb[0] == 2 && v->nb[0] == 2 &&
           k->ne[1] == v->ne[1] && k->ne[2] == q->ne[2] && v->ne[2] == q->ne[2] && k->nb[1] % 2 == 0 && v->nb[1] % 2 == 0 && k->nb[2] % 2 == 0 && v->nb[2] % 2 == 0 &&
           q->nb[2] % sizeof(float) == 0 &&
           k->ne[3] == 1 && v->ne[3] == 1 && q->ne[3] == 1 && mask != nullptr && mask->type == GGML_TYPE_F16 &&
           mask->nb[0] == 2 && mask->ne[0] == k->ne[1] && mask->ne[1] >= q->ne[1];
#else
    (void)q, (void)k, (void)v, (void)mask;
    return false;
#endif
}

ggml_tensor * xglm_attention(ggml_context * ctx, ggml_tensor * q, ggml_tensor * k, ggml_tensor * v, ggml_tensor * mask,
                             float scale, ggml_tensor * k_cur, ggml_tensor * v_cur, ggml_tensor * kv_idxs) {
    ggml_tensor * args[] = {q, k, v, mask, k_cur, v_cur, kv_idxs};
    const bool    store  = k_cur != nullptr;
    return ggml_custom_4d(ctx, GGML_TYPE_F32, q->ne[0], q->ne[2], q->ne[1], 1, args, store ? 7 : 4, attention_op,
                          GGML_N_TASKS_MAX, scale_to_userdata(scale));
}

bool xglm_attention_can_store(const ggml_tensor * q, const ggml_tensor * k_cur, const ggml_tensor * v_cur,
                              const ggml_tensor * kv_idxs) {
    const int64_t n = q->ne[0] * q->ne[2];
    return q->ne[1] == 1 && k_cur->type == GGML_TYPE_F32 && v_cur->type == GGML_TYPE_F32 && ggml_nelements(k_cur) == n &&
           ggml_nelements(v_cur) == n && ggml_is_contiguous(k_cur) && ggml_is_contiguous(v_cur) &&
           kv_idxs->type == GGML_TYPE_I64 && ggml_nelements(kv_idxs) == 1;
}
