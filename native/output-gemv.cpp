// Q6_K × F32-column output product as a ggml custom op; see output-gemv.h for why.
#include "output-gemv.h"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

// ggml's reference Q8_K quantizer (ggml-base, ggml-quants.h is not installed): the CPU
// backend's quantize_row_q8_K on x86 is this very function, so activations match mul_mat's.
extern "C" void quantize_row_q8_K_ref(const float * x, void * y, int64_t k);

namespace {

constexpr int QK_K = 256;

// ggml's block layouts (ggml-common.h), checked against ggml_type_size at run time.
struct block_q6_K {
    uint8_t  ql[QK_K / 2];   // low 4 bits of the quants
    uint8_t  qh[QK_K / 4];   // high 2 bits
    int8_t   scales[QK_K / 16];
    uint16_t d;              // F16 super-block scale
};
struct block_q8_K {
    float   d;
    int8_t  qs[QK_K];
    int16_t bsums[QK_K / 16];  // sums of 16 quants
};
static_assert(sizeof(block_q6_K) == 210 && sizeof(block_q8_K) == 292, "ggml block layout");

// How far ahead of the dot products each thread asks for weight bytes. Zen 3, 2 threads,
// 256008×1024: without it 1.1x ggml's mul_mat, with it 1.3-1.5x and as fast as a bare read
// of the matrix; 1 to 16 KB measured alike.
constexpr size_t prefetch_distance = 4096;

bool disabled_by_env() {
    const char * v = std::getenv("XGLM_NO_CUSTOM_GEMV");
    return v != nullptr && v[0] != '\0' && std::strcmp(v, "0") != 0;
}

bool cpu_has_avx2_fma_f16c() {
#if defined(__x86_64__)
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
#else
    return false;
#endif
}

#if defined(__x86_64__)

// Same reduction as ggml's hsum_float_8, so the row sums match mul_mat's bit for bit.
__attribute__((target("avx2,fma,f16c"))) inline float hsum_8(__m256 x) {
    __m128 r = _mm_add_ps(_mm256_extractf128_ps(x, 1), _mm256_castps256_ps128(x));
    r        = _mm_add_ps(r, _mm_movehl_ps(r, r));
    r        = _mm_add_ss(r, _mm_movehdup_ps(r));
    return _mm_cvtss_f32(r);
}

// One Q6_K row · Q8_K column over nb blocks: Σ_blocks d_w·d_h·Σ_i scale_i·(q6_i − 32)·q8_i,
// the −32 taken out through the column's 16-sums. Eight int32 lanes per block, as in ggml.
__attribute__((target("avx2,fma,f16c"))) float dot_row(const block_q6_K * x, const block_q8_K * y, int nb) {
    const __m256i m3  = _mm256_set1_epi8(3);
    const __m256i m15 = _mm256_set1_epi8(15);
    // int16 scale 2k of the half to the low 128-bit lane, 2k+1 to the high one
    const __m256i scale_pick[4] = {
        _mm256_setr_epi8(0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3),
        _mm256_setr_epi8(4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 6, 7, 6, 7, 6, 7, 6, 7, 6, 7, 6, 7, 6, 7, 6, 7),
        _mm256_setr_epi8(8, 9, 8, 9, 8, 9, 8, 9, 8, 9, 8, 9, 8, 9, 8, 9, 10, 11, 10, 11, 10, 11, 10, 11, 10, 11, 10,
                         11, 10, 11, 10, 11),
        _mm256_setr_epi8(12, 13, 12, 13, 12, 13, 12, 13, 12, 13, 12, 13, 12, 13, 12, 13, 14, 15, 14, 15, 14, 15, 14,
                         15, 14, 15, 14, 15, 14, 15, 14, 15),
    };
    __m256 acc = _mm256_setzero_ps();
    for (int i = 0; i < nb; ++i) {
        const float d = y[i].d * _cvtsh_ss(x[i].d);

        const __m128i scales    = _mm_loadu_si128(reinterpret_cast<const __m128i *>(x[i].scales));
        const __m256i q8sums    = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(y[i].bsums));
        const __m256i scales16  = _mm256_cvtepi8_epi16(scales);
        const __m256i q8sclsub  = _mm256_slli_epi32(_mm256_madd_epi16(q8sums, scales16), 5);
        // the 8 scales of each 128-quant half as int16, in both 128-bit lanes: [s0..s7 | s0..s7]
        const __m256i scales_half[2] = {_mm256_permute4x64_epi64(scales16, 0x44),
                                        _mm256_permute4x64_epi64(scales16, 0xEE)};
        __m256i       sumi           = _mm256_setzero_si256();

        const uint8_t * ql = x[i].ql;
        const uint8_t * qh = x[i].qh;
        const int8_t *  q8 = y[i].qs;
        for (int j = 0; j < QK_K / 128; ++j) {
            const __m256i s16 = scales_half[j];

            const __m256i bits1 = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(ql));
            const __m256i bits2 = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(ql + 32));
            const __m256i bitsH = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(qh));
            ql += 64;
            qh += 32;

            const __m256i h0 = _mm256_slli_epi16(_mm256_and_si256(bitsH, m3), 4);
            const __m256i h1 = _mm256_slli_epi16(_mm256_and_si256(bitsH, _mm256_set1_epi8(12)), 2);
            const __m256i h2 = _mm256_and_si256(bitsH, _mm256_set1_epi8(48));
            const __m256i h3 = _mm256_srli_epi16(_mm256_and_si256(bitsH, _mm256_set1_epi8(-64)), 2);

            const __m256i q0 = _mm256_or_si256(_mm256_and_si256(bits1, m15), h0);
            const __m256i q1 = _mm256_or_si256(_mm256_and_si256(bits2, m15), h1);
            const __m256i q2 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(bits1, 4), m15), h2);
            const __m256i q3 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(bits2, 4), m15), h3);

            __m256i p0 = _mm256_maddubs_epi16(q0, _mm256_loadu_si256(reinterpret_cast<const __m256i *>(q8)));
            __m256i p1 = _mm256_maddubs_epi16(q1, _mm256_loadu_si256(reinterpret_cast<const __m256i *>(q8 + 32)));
            __m256i p2 = _mm256_maddubs_epi16(q2, _mm256_loadu_si256(reinterpret_cast<const __m256i *>(q8 + 64)));
            __m256i p3 = _mm256_maddubs_epi16(q3, _mm256_loadu_si256(reinterpret_cast<const __m256i *>(q8 + 96)));
            q8 += 128;

            p0 = _mm256_madd_epi16(_mm256_shuffle_epi8(s16, scale_pick[0]), p0);
            p1 = _mm256_madd_epi16(_mm256_shuffle_epi8(s16, scale_pick[1]), p1);
            p2 = _mm256_madd_epi16(_mm256_shuffle_epi8(s16, scale_pick[2]), p2);
            p3 = _mm256_madd_epi16(_mm256_shuffle_epi8(s16, scale_pick[3]), p3);

            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p0, p1));
            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p2, p3));
        }
        sumi = _mm256_sub_epi32(sumi, q8sclsub);
        acc  = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    return hsum_8(acc);
}

// rows [r0, r1) of the product, asking for the bytes prefetch_distance ahead of each row
__attribute__((target("avx2,fma,f16c"))) void dot_rows(const char * w, size_t row_bytes, const block_q8_K * y,
                                                      int nb, float * out, int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
        const char * row = w + r * row_bytes;
        for (size_t off = 0; off < row_bytes; off += 64) _mm_prefetch(row + prefetch_distance + off, _MM_HINT_T0);
        out[r] = dot_row(reinterpret_cast<const block_q6_K *>(row), y, nb);
    }
}

#endif

// dst = src[0]ᵀ · src[1]; thread ith of nth takes a contiguous share of the rows.
void output_gemv_op(ggml_tensor * dst, int ith, int nth, void * /*userdata*/) {
#if defined(__x86_64__)
    const ggml_tensor * w = dst->src[0];
    const ggml_tensor * h = dst->src[1];
    const int64_t n_embd = w->ne[0];
    const int64_t n_rows = w->ne[1];
    const int     nb     = static_cast<int>(n_embd / QK_K);

    // each thread quantizes h itself (a few µs): custom ops have no barrier to share it
    std::vector<block_q8_K> hq(nb);
    quantize_row_q8_K_ref(static_cast<const float *>(h->data), hq.data(), n_embd);

    // shares rounded to 8 rows so no two threads write the same output cache line
    const int64_t per = (n_rows / nth + 7) & ~int64_t(7);
    const int64_t r0  = std::min<int64_t>(n_rows, per * ith);
    const int64_t r1  = ith == nth - 1 ? n_rows : std::min<int64_t>(n_rows, r0 + per);
    dot_rows(static_cast<const char *>(w->data), w->nb[1], hq.data(), nb, static_cast<float *>(dst->data), r0, r1);
#else
    (void)dst, (void)ith, (void)nth;
#endif
}

}  // namespace

bool xglm_output_gemv_usable(const ggml_tensor * output, const ggml_tensor * h) {
    // extra == nullptr: plain blocks, not a layout rearranged by a CPU_REPACK buffer
    return output->type == GGML_TYPE_Q6_K && ggml_type_size(GGML_TYPE_Q6_K) == sizeof(block_q6_K) && output->extra == nullptr &&
           output->ne[0] % QK_K == 0 && output->ne[2] == 1 && output->ne[3] == 1 && ggml_is_contiguous(output) &&
           h->type == GGML_TYPE_F32 && h->ne[0] == output->ne[0] && ggml_nrows(h) == 1 && ggml_is_contiguous(h) &&
           cpu_has_avx2_fma_f16c() && !disabled_by_env();
}

ggml_tensor * xglm_output_gemv(ggml_context * ctx, ggml_tensor * output, ggml_tensor * h) {
    // with XGLM_LOG set, say so at each graph build: A/B runs and tests check which path ran
    if (std::getenv("XGLM_LOG") != nullptr) std::fprintf(stderr, "xglm: logits through the Q6_K output-gemv op\n");
    ggml_tensor * args[] = {output, h};
    return ggml_custom_4d(ctx, GGML_TYPE_F32, output->ne[1], 1, 1, 1, args, 2, output_gemv_op, GGML_N_TASKS_MAX,
                          nullptr);
}
