// Weight · one-column products of decode as a ggml custom op; see decode-gemv.h for why.
#include "decode-gemv.h"

#include "layer-norm.h"

#include "ggml-backend.h"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "simd-math.h"

// ggml's reference Q8_K quantizer (ggml-base, ggml-quants.h is not installed): the CPU
// backend's quantize_row_q8_K on x86 is this very function, so activations match mul_mat's.
extern "C" void quantize_row_q8_K_ref(const float * x, void * y, int64_t k);

namespace {

constexpr int QK_K  = 256;
constexpr int QK8_0 = 32;

// ggml's block layouts (ggml-common.h), checked against ggml_type_size at run time.
struct block_q6_K {
    uint8_t  ql[QK_K / 2];   // low 4 bits of the quants
    uint8_t  qh[QK_K / 4];   // high 2 bits
    int8_t   scales[QK_K / 16];
    uint16_t d;              // F16 super-block scale
};
struct block_q5_K {
    uint16_t d;     // F16 super-block scale of the scales
    uint16_t dmin;  // F16 super-block scale of the mins
    uint8_t  scales[12];  // 8 scales and 8 mins, 6 bits each
    uint8_t  qh[QK_K / 8];  // 5th bits
    uint8_t  qs[QK_K / 2];  // low 4 bits
};
struct block_q8_K {
    float   d;
    int8_t  qs[QK_K];
    int16_t bsums[QK_K / 16];  // sums of 16 quants
};
struct block_q8_0 {
    uint16_t d;  // F16 scale
    int8_t   qs[QK8_0];
};
// Q4_0 weights as ggml's CPU_REPACK buffer keeps them on AVX2 (repack.cpp, block_q4_0x8): the
// blocks of 8 consecutive rows side by side, their scales first, then 8-byte pieces of each
// block in turn (rows 0..7 bytes 0-7, rows 0..7 bytes 8-15), every quant byte XOR 0x88 (signed
// nibbles). One "row" of the product below is such a group of 8 rows.
struct block_q4_0x8 {
    uint16_t d[8];
    uint8_t  qs[8 * QK8_0 / 2];
};
// Q8_0 layer weights as xglm_repack_q8_0x8 rearranges them (ours, for the VNNI kernel; ggml's
// CPU_REPACK takes Q8_0 on ARM only): as block_q4_0x8, the blocks of 8 consecutive rows side by
// side, the 8 scales, then each row's quants 8k..8k+7 for k = 0..3 (qs[64k + 8r + j] = row r's
// quant 8k + j), every quant offset by 128 so that it is the unsigned operand of vpdpbusd. The
// same 272 bytes as the 8 plain blocks.
struct block_q8_0x8 {
    uint16_t d[8];
    uint8_t  qs[8 * QK8_0];
};
static_assert(sizeof(block_q8_0x8) == 8 * 34, "8 Q8_0 blocks");
// Q4_K weights as ggml's CPU_REPACK buffer keeps them on AVX2 (repack.cpp, make_block_q4_Kx8):
// the super-blocks of 8 consecutive rows side by side: their d and dmin, then per 32-quant
// sub-block 12 bytes with the 8 rows' 6-bit scales and mins (packed across rows as Q4_K packs them
// across sub-blocks: rows 0-3 in the low 6 bits of bytes 0-3 (scales) and 4-7 (mins), rows 4-7's
// top 2 bits above those and their low 4 bits in bytes 8-11), then the quant bytes 8 at a time
// (qs[64c + 8r + j] = row r's byte 8c + j: low nibble quant 64(c/4) + 8(c%4) + j, high nibble
// the same + 32, quants 0..15 unsigned).
struct block_q4_Kx8 {
    uint16_t d[8];
    uint16_t dmin[8];
    uint8_t  scales[96];
    uint8_t  qs[1024];
};
static_assert(sizeof(block_q4_Kx8) == 8 * 144, "8 Q4_K blocks");
static_assert(sizeof(block_q5_K) == 176, "ggml block layout");
static_assert(sizeof(block_q6_K) == 210 && sizeof(block_q4_0x8) == 144 && sizeof(block_q8_K) == 292 && sizeof(block_q8_0) == 34, "ggml block layout");

// Columns whose prepared operands one pass over the weights takes (64 Q8_0 columns of a 4096-wide
// ffn_down: 280 KB, within L2); more columns take more passes.
constexpr int column_block = 64;

// How far ahead of the dot products each thread asks for weight bytes. Zen 3, 2 threads,
// Q6_K 256008×1024: without it 1.1x ggml's mul_mat, with it 1.3-1.5x and as fast as a bare
// read of the matrix; 1 to 16 KB measured alike.
constexpr size_t prefetch_distance = 4096;

// The column each thread prepares from x: the operand of its type's row dot.
size_t column_bytes(ggml_type type, int64_t n) {
    switch (type) {
        case GGML_TYPE_Q6_K:
        case GGML_TYPE_Q5_K: return sizeof(block_q8_K) * (n / QK_K);
        case GGML_TYPE_Q8_0: return (sizeof(block_q8_0) + sizeof(float)) * (n / QK8_0);
        default:             return 0;
    }
}

#if defined(__x86_64__)

// --- Q6_K × Q8_K ------------------------------------------------------------------------

// The quants (0..63) of one 128-quant half of a Q6_K block — ql: its 64 bytes of low bits, qh:
// its 32 bytes of high bits — in 4 registers of 32 (q[k]: the k-th 32), as ggml's AVX2 vec_dot
// reads them.
XGLM_AVX2 inline void unpack_q6_K_half(const uint8_t * ql, const uint8_t * qh, __m256i q[4]) {
    const __m256i m15   = _mm256_set1_epi8(15);
    const __m256i bits1 = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(ql));
    const __m256i bits2 = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(ql + 32));
    const __m256i bitsH = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(qh));
    const __m256i h0    = _mm256_slli_epi16(_mm256_and_si256(bitsH, _mm256_set1_epi8(3)), 4);
    const __m256i h1    = _mm256_slli_epi16(_mm256_and_si256(bitsH, _mm256_set1_epi8(12)), 2);
    const __m256i h2    = _mm256_and_si256(bitsH, _mm256_set1_epi8(48));
    const __m256i h3    = _mm256_srli_epi16(_mm256_and_si256(bitsH, _mm256_set1_epi8(-64)), 2);
    q[0]                = _mm256_or_si256(_mm256_and_si256(bits1, m15), h0);
    q[1]                = _mm256_or_si256(_mm256_and_si256(bits2, m15), h1);
    q[2]                = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(bits1, 4), m15), h2);
    q[3]                = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(bits2, 4), m15), h3);
}

// The int16 scale of each quant of q[k] (unpack_q6_K_half), from the half's 8 scales as int16 in
// both 128-bit lanes (s16 = [s0..s7 | s0..s7]): scale 2k to the low lane, 2k+1 to the high one.
XGLM_AVX2 inline __m256i q6_K_scales_of(__m256i s16, int k) {
    const __m256i pick = _mm256_add_epi8(_mm256_setr_epi8(0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 2, 3, 2, 3, 2, 3, 2, 3,
                                                          2, 3, 2, 3, 2, 3, 2, 3),
                                         _mm256_set1_epi8(static_cast<char>(4 * k)));
    return _mm256_shuffle_epi8(s16, pick);
}

// One Q6_K row · Q8_K column over nb blocks: Σ_blocks d_w·d_h·Σ_i scale_i·(q6_i − 32)·q8_i,
// the −32 taken out through the column's 16-sums. Eight int32 lanes per block, as in ggml.
XGLM_AVX2 float dot_q6_K(const void * row, const void * col, int64_t n) {
    const auto * x  = static_cast<const block_q6_K *>(row);
    const auto * y  = static_cast<const block_q8_K *>(col);
    const int    nb = static_cast<int>(n / QK_K);

    __m256 acc = _mm256_setzero_ps();
    for (int i = 0; i < nb; ++i) {
        const float d = y[i].d * _cvtsh_ss(x[i].d);

        const __m128i scales    = _mm_loadu_si128(reinterpret_cast<const __m128i *>(x[i].scales));
        const __m256i q8sums    = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(y[i].bsums));
        const __m256i scales16  = _mm256_cvtepi8_epi16(scales);
        const __m256i q8sclsub  = _mm256_slli_epi32(_mm256_madd_epi16(q8sums, scales16), 5);
        __m256i       sumi      = _mm256_setzero_si256();
        for (int j = 0; j < QK_K / 128; ++j) {
            // the 8 scales of this 128-quant half as int16, in both 128-bit lanes (the
            // permute's selector must be a literal for clang, hence two calls)
            const __m256i s16 = (j == 0 ? _mm256_permute4x64_epi64(scales16, 0x44) : _mm256_permute4x64_epi64(scales16, 0xEE));
            __m256i       q[4], p[4];
            unpack_q6_K_half(x[i].ql + 64 * j, x[i].qh + 32 * j, q);
            for (int k = 0; k < 4; ++k) {
                p[k] = _mm256_maddubs_epi16(q[k], _mm256_loadu_si256(reinterpret_cast<const __m256i *>(y[i].qs + 128 * j + 32 * k)));
                p[k] = _mm256_madd_epi16(q6_K_scales_of(s16, k), p[k]);
            }
            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p[0], p[1]));
            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p[2], p[3]));
        }
        sumi = _mm256_sub_epi32(sumi, q8sclsub);
        acc  = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    return xglm_hsum_8(acc);
}

// One Q6_K block unpacked: its 256 quants (0..63) in 8 registers of 32, q[4j + k] holding the
// k-th 32 of half j, and the int16 scale of each quant beside it in sc[].
XGLM_AVX2 inline void unpack_q6_K(const block_q6_K & x, __m256i scales16, __m256i q[8], __m256i sc[8]) {
    for (int j = 0; j < 2; ++j) {
        const __m256i s16 = (j == 0 ? _mm256_permute4x64_epi64(scales16, 0x44) : _mm256_permute4x64_epi64(scales16, 0xEE));
        unpack_q6_K_half(x.ql + 64 * j, x.qh + 32 * j, q + 4 * j);
        for (int k = 0; k < 4; ++k) sc[4 * j + k] = q6_K_scales_of(s16, k);
    }
}

// Rows of Q6_K · NC Q8_K columns at once: each weight block is unpacked once and dotted with
// every column, where dot_q6_K unpacks it per column (ggml's mul_mat too: one vec_dot per row
// and column). Per (row, column) the integers and the float order are dot_q6_K's, so each
// result is bit-identical to it. out[c] = the row · column c.
template <int NC>
XGLM_AVX2 void dot_q6_K_cols(const block_q6_K * x, const block_q8_K * const * y, int nb, float * out) {
    __m256 acc[NC];
    for (int c = 0; c < NC; ++c) acc[c] = _mm256_setzero_ps();
    for (int i = 0; i < nb; ++i) {
        const float   dx       = _cvtsh_ss(x[i].d);
        const __m256i scales16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i *>(x[i].scales)));
        __m256i       q[8], sc[8];
        unpack_q6_K(x[i], scales16, q, sc);
        for (int c = 0; c < NC; ++c) {
            const block_q8_K & yc   = y[c][i];
            const __m256i      q8s  = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(yc.bsums));
            const __m256i      sub  = _mm256_slli_epi32(_mm256_madd_epi16(q8s, scales16), 5);
            __m256i            sumi = _mm256_setzero_si256();
            for (int k = 0; k < 8; ++k) {
                const __m256i p = _mm256_maddubs_epi16(q[k], _mm256_loadu_si256(reinterpret_cast<const __m256i *>(yc.qs + 32 * k)));
                sumi            = _mm256_add_epi32(sumi, _mm256_madd_epi16(sc[k], p));
            }
            sumi   = _mm256_sub_epi32(sumi, sub);
            acc[c] = _mm256_fmadd_ps(_mm256_set1_ps(yc.d * dx), _mm256_cvtepi32_ps(sumi), acc[c]);
        }
    }
    for (int c = 0; c < NC; ++c) out[c] = xglm_hsum_8(acc[c]);
}

// The same with AVX-512 VNNI, for ggml variants that run it: 64 quants per instruction, and
// vpdpwssd applies the int16 scales and accumulates in one step (maddubs → madd → add above).
// The 16 int32 lanes fold to dot_q6_K_cols's 8 (lane i + lane 8 + i: the same products), so the
// integers, and from there the float steps, are the same: bit-identical to it.
XGLM_AVX512_BEGIN
template <int NC>
XGLM_AVX512_VNNI void dot_q6_K_cols_vnni(const block_q6_K * x, const block_q8_K * const * y, int nb, float * out) {
    __m256 acc[NC];
    for (int c = 0; c < NC; ++c) acc[c] = _mm256_setzero_ps();
    for (int i = 0; i < nb; ++i) {
        const float   dx       = _cvtsh_ss(x[i].d);
        const __m256i scales16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i *>(x[i].scales)));
        __m256i       q8[8], sc8[8];
        unpack_q6_K(x[i], scales16, q8, sc8);
        // q[2j + m]: quants 64m..64m+63 of half j (q8[4j + 2m] and q8[4j + 2m + 1]), next to the
        // column's bytes 128j + 64m.., and their int16 scales
        __m512i q[4], sc[4];
        for (int k = 0; k < 4; ++k) {
            q[k]  = _mm512_inserti64x4(_mm512_castsi256_si512(q8[2 * k]), q8[2 * k + 1], 1);
            sc[k] = _mm512_inserti64x4(_mm512_castsi256_si512(sc8[2 * k]), sc8[2 * k + 1], 1);
        }
        for (int c = 0; c < NC; ++c) {
            const block_q8_K & yc  = y[c][i];
            const __m256i      q8s = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(yc.bsums));
            const __m256i      sub = _mm256_slli_epi32(_mm256_madd_epi16(q8s, scales16), 5);
            __m512i            s   = _mm512_setzero_si512();
            for (int k = 0; k < 4; ++k) {
                s = _mm512_dpwssd_epi32(s, _mm512_maddubs_epi16(q[k], _mm512_loadu_si512(yc.qs + 64 * k)), sc[k]);
            }
            __m256i sumi = _mm256_add_epi32(_mm512_castsi512_si256(s), _mm512_extracti64x4_epi64(s, 1));
            sumi         = _mm256_sub_epi32(sumi, sub);
            acc[c]       = _mm256_fmadd_ps(_mm256_set1_ps(yc.d * dx), _mm256_cvtepi32_ps(sumi), acc[c]);
        }
    }
    for (int c = 0; c < NC; ++c) out[c] = xglm_hsum_8(acc[c]);
}

// --- Q5_K × Q8_K, AVX-512 VNNI ------------------------------------------------------------

// Rows of Q5_K (the attention products of q4_k_m files) · NC Q8_K columns, each weight block
// unpacked once for all of them, with the integers and float steps of ggml's AVX2
// vec_dot_q5_K_q8_K per (row, column): 8 int32 lanes of Σ scale·q·y per block (here 16 lanes
// folded to its 8: the same products), acc += (d_y·d)·lanes, the mins' Σ min·Σ y per block into a
// scalar summs += (−d_y·dmin)·that, and hsum(acc) + summs at the end: bit-identical to mul_mat.
template <int NC>
XGLM_AVX512_VNNI void dot_q5_K_cols_vnni(const block_q5_K * x, const block_q8_K * const * y, int nb, float * out) {
    constexpr uint32_t kmask1 = 0x3f3f3f3f, kmask2 = 0x0f0f0f0f, kmask3 = 0x03030303;
    const __m256i      m4     = _mm256_set1_epi8(0xF);
    const __m256i      mone   = _mm256_set1_epi8(1);
    __m256             acc[NC];
    float              summs[NC];
    for (int c = 0; c < NC; ++c) acc[c] = _mm256_setzero_ps(), summs[c] = 0.0f;
    for (int i = 0; i < nb; ++i) {
        const float xd = _cvtsh_ss(x[i].d), xdmin = _cvtsh_ss(x[i].dmin);
        uint32_t    utmp[4];
        std::memcpy(utmp, x[i].scales, 12);
        utmp[3]             = ((utmp[2] >> 4) & kmask2) | (((utmp[1] >> 6) & kmask3) << 4);
        const uint32_t uaux = utmp[1] & kmask1;
        utmp[1]             = (utmp[2] & kmask2) | (((utmp[0] >> 6) & kmask3) << 4);
        utmp[2]             = uaux;
        utmp[0] &= kmask1;
        uint8_t sc[8];
        std::memcpy(sc, utmp, 8);  // utmp[2..3]: the 8 mins
        const __m128i mins16 = _mm_cvtepu8_epi16(_mm_set_epi32(0, 0, static_cast<int>(utmp[3]), static_cast<int>(utmp[2])));
        const __m256i hbits  = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(x[i].qh));
        // q[k]: sub-block 2k's 32 quants (0..31), then 2k + 1's, next to the column's bytes 64k..;
        // scv[k]: their int16 scales
        __m512i q[4], scv[4];
        for (int k = 0; k < 4; ++k) {
            const __m256i bits = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(x[i].qs + 32 * k));
            const __m256i h0   = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hbits, 2 * k), mone), 4);
            const __m256i h1   = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hbits, 2 * k + 1), mone), 4);
            const __m256i q0   = _mm256_or_si256(_mm256_and_si256(bits, m4), h0);
            const __m256i q1   = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(bits, 4), m4), h1);
            q[k]               = _mm512_inserti64x4(_mm512_castsi256_si512(q0), q1, 1);
            scv[k] = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_set1_epi16(sc[2 * k])), _mm256_set1_epi16(sc[2 * k + 1]), 1);
        }
        for (int c = 0; c < NC; ++c) {
            const block_q8_K & yc = y[c][i];
            __m512i            s  = _mm512_setzero_si512();
            for (int k = 0; k < 4; ++k) s = _mm512_dpwssd_epi32(s, _mm512_maddubs_epi16(q[k], _mm512_loadu_si512(yc.qs + 64 * k)), scv[k]);
            const __m256i sumi = _mm256_add_epi32(_mm512_castsi512_si256(s), _mm512_extracti64x4_epi64(s, 1));
            acc[c]             = _mm256_fmadd_ps(_mm256_set1_ps(yc.d * xd), _mm256_cvtepi32_ps(sumi), acc[c]);
            // the mins, as ggml: the 8 sub-block sums of y (hadd of the 16-quant sums) · the mins
            const __m256i q8sums = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(yc.bsums));
            const __m128i q8s    = _mm_hadd_epi16(_mm256_castsi256_si128(q8sums), _mm256_extracti128_si256(q8sums, 1));
            const __m128i prod   = _mm_madd_epi16(mins16, q8s);
            const __m128i hsum   = _mm_hadd_epi32(_mm_hadd_epi32(prod, _mm_setzero_si128()), _mm_setzero_si128());
            summs[c] += (-yc.d * xdmin) * static_cast<float>(_mm_cvtsi128_si32(hsum));
        }
    }
    for (int c = 0; c < NC; ++c) out[c] = xglm_hsum_8(acc[c]) + summs[c];
}
XGLM_AVX512_END

// --- the column as Q8_0 -----------------------------------------------------------------

// x as Q8_0 blocks exactly as ggml's AVX2 quantize_row_q8_0 makes them (not the reference
// quantizer: 127/max instead of 1/(max/127), and rounding half to even).
XGLM_AVX2 void quantize_q8_0(const float * x, block_q8_0 * y, int64_t n) {
    const __m256 sign_bit = _mm256_set1_ps(-0.0f);
    const __m256i perm    = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (int64_t i = 0; i < n / QK8_0; ++i, x += QK8_0) {
        __m256 v[4];
        for (int k = 0; k < 4; ++k) v[k] = _mm256_loadu_ps(x + 8 * k);
        __m256 max_abs = _mm256_andnot_ps(sign_bit, v[0]);
        for (int k = 1; k < 4; ++k) max_abs = _mm256_max_ps(max_abs, _mm256_andnot_ps(sign_bit, v[k]));
        __m128 max4 = _mm_max_ps(_mm256_extractf128_ps(max_abs, 1), _mm256_castps256_ps128(max_abs));
        max4        = _mm_max_ps(max4, _mm_movehl_ps(max4, max4));
        max4        = _mm_max_ss(max4, _mm_movehdup_ps(max4));
        const float amax = _mm_cvtss_f32(max4);

        y[i].d           = _cvtss_sh(amax / 127.f, 0);
        const __m256 mul = _mm256_set1_ps(amax != 0.0f ? 127.f / amax : 0.0f);
        __m256i      q[4];
        for (int k = 0; k < 4; ++k) {
            q[k] = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v[k], mul), _MM_FROUND_TO_NEAREST_INT));
        }
        // the packs work per 128-bit lane; the permutation puts the 32 bytes back in order
        const __m256i q16 = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
        _mm256_storeu_si256(reinterpret_cast<__m256i *>(y[i].qs), _mm256_permutevar8x32_epi32(q16, perm));
    }
}

// x as Q8_K blocks bit for bit as ggml's quantize_row_q8_K_ref makes them (the quantizer mul_mat
// uses for K-quant weights on x86), 8 lanes at a time: the scale from the first value of largest
// magnitude (−127/that value), quants rounded to nearest even as its nearest_int does (|v| ≤ 127,
// far below where the two could differ), a NaN (x86's default NaN) giving 0 as there, sums of 16. ~6% of a q4_k_m
// prefill went to the scalar reference (each thread quantizes every column).
XGLM_AVX2 void quantize_q8_K(const float * x, void * vy, int64_t n) {
    auto *        y        = static_cast<block_q8_K *>(vy);
    const __m256  sign_bit = _mm256_set1_ps(-0.0f);
    const __m256i perm     = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (int64_t i = 0; i < n / QK_K; ++i, x += QK_K) {
        __m256 amax8 = _mm256_setzero_ps();
        // max_ps returns its second operand when either is NaN: a NaN value is passed over, as
        // ggml's `ax > amax` passes over it
        for (int k = 0; k < QK_K / 8; ++k) amax8 = _mm256_max_ps(_mm256_andnot_ps(sign_bit, _mm256_loadu_ps(x + 8 * k)), amax8);
        __m128 m4 = _mm_max_ps(_mm256_extractf128_ps(amax8, 1), _mm256_castps256_ps128(amax8));
        m4        = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4        = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        const float amax = _mm_cvtss_f32(m4);
        if (!(amax > 0.0f)) {  // ggml's scan finds no value above 0 (all zero, or NaN)
            y[i].d = 0;
            std::memset(y[i].qs, 0, QK_K);
            std::memset(y[i].bsums, 0, sizeof y[i].bsums);
            continue;
        }
        float max = 0.0f;  // the first value whose magnitude is amax, sign included
        for (int k = 0; k < QK_K / 8; ++k) {
            const __m256 v    = _mm256_loadu_ps(x + 8 * k);
            const int    hits = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_andnot_ps(sign_bit, v), _mm256_set1_ps(amax), _CMP_EQ_OQ));
            if (hits) {
                max = x[8 * k + __builtin_ctz(static_cast<unsigned>(hits))];
                break;
            }
        }
        const float  iscale = -127.f / max;
        const __m256 mul    = _mm256_set1_ps(iscale);
        for (int k = 0; k < QK_K / 32; ++k) {
            __m256i q[4];
            for (int h = 0; h < 4; ++h) {
                const __m256 v   = _mm256_mul_ps(mul, _mm256_loadu_ps(x + 32 * k + 8 * h));
                const __m256 nan = _mm256_cmp_ps(v, v, _CMP_UNORD_Q);
                q[h]             = _mm256_min_epi32(_mm256_andnot_si256(_mm256_castps_si256(nan), _mm256_cvtps_epi32(v)), _mm256_set1_epi32(127));
            }
            for (int h = 0; h < 2; ++h) {  // sums of 16
                __m256i  s  = _mm256_add_epi32(q[2 * h], q[2 * h + 1]);
                __m128i  s4 = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
                s4          = _mm_add_epi32(s4, _mm_unpackhi_epi64(s4, s4));
                s4          = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 1));
                y[i].bsums[2 * k + h] = static_cast<int16_t>(_mm_cvtsi128_si32(s4));
            }
            const __m256i q16 = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
            _mm256_storeu_si256(reinterpret_cast<__m256i *>(y[i].qs + 32 * k), _mm256_permutevar8x32_epi32(q16, perm));
        }
        y[i].d = 1 / iscale;
    }
}

// The column's Q8_0 blocks followed by their scales as F32 (converted once, not per row).
XGLM_AVX2 void prepare_q8_0(const float * x, void * col, int64_t n) {
    auto *  y  = static_cast<block_q8_0 *>(col);
    float * yd = reinterpret_cast<float *>(y + n / QK8_0);
    quantize_q8_0(x, y, n);
    for (int64_t i = 0; i < n / QK8_0; ++i) yd[i] = _cvtsh_ss(y[i].d);
}

// --- Q4_0 (repacked, 8 rows at a time) × Q8_0 ---------------------------------------------

// The 8-row-group kernels' columns (repacked Q4_0, repacked Q8_0), interleaved by tile: for each
// block, the tile's columns side by side (column c of a tile at slot c), so one pointer walks
// every column of a block with constant offsets. One slot: the block's Q8_0 quants (as ggml's
// AVX2 quantize_row_q8_0 makes them), its scale as F32, and −bias × the sum of its quants then a
// 0 (an int64 lane's worth: the VNNI kernels start each row's pair of lanes from it; the AVX2
// kernel adds the first half), bias being what the weights' unsigned form adds to each quant
// (8 for Q4_0's nibbles, 128 for repacked Q8_0).
struct alignas(16) col_slot {
    int8_t  qs[QK8_0];
    float   d;
    int32_t off[2];
    int32_t pad;
};
static_assert(sizeof(col_slot) == 48, "slot layout");

// The widest tile of the 8-row-group kernels (VNNI); the AVX2 ones use the first 4 slots of each.
constexpr int x8_tile = 8;

// Column x (n values) into slot `slot` of the tile at `tile` (nb blocks × `width` slots: x8_tile,
// or fewer when the product has fewer columns, so that one column stays dense in the cache).
XGLM_AVX2 void prepare_x8_column(const float * x, col_slot * tile, int slot, int width, int64_t n, int32_t bias) {
    const int64_t nb = n / QK8_0;
    thread_local std::vector<block_q8_0> q;
    q.resize(nb);
    quantize_q8_0(x, q.data(), n);
    for (int64_t i = 0; i < nb; ++i) {
        col_slot & c = tile[i * width + slot];
        std::memcpy(c.qs, q[i].qs, QK8_0);
        c.d     = _cvtsh_ss(q[i].d);
        int32_t sum = 0;
        for (int k = 0; k < QK8_0; ++k) sum += q[i].qs[k];
        c.off[0] = -bias * sum;
        c.off[1] = 0;
        c.pad    = 0;
    }
}

// One column prepared by prepare_q8_0 (the Q8_0 kernels): its blocks and their scales as F32.
struct q8_0_column {
    const block_q8_0 * q;
    const float *      d;
};

q8_0_column q8_0_parts(const void * col, int64_t nb) {
    const auto * q = static_cast<const block_q8_0 *>(col);
    return {q, reinterpret_cast<const float *>(q + nb)};
}

// Rows 8g..8g+7 (x: the group's nb blocks) · NC Q8_0 columns (y: a tile's first slot), as
// ggml's AVX2 gemv for block_q4_0x8 computes each column: per block an exact integer dot for
// each row, then
// acc_r += isum_r · (d_w,r · d_h) with one FMA per block. The weight block is unpacked once for
// all NC columns. The integer dots take the nibbles unsigned (q = s ^ 8, 0..15) and subtract
// 8·Σ q_h: Σ (q − 8)·q_h is the same integer, with fewer instructions than sign-extending the
// nibbles. acc[c] = the 8 rows · column c.
template <int NC>
XGLM_AVX2 void dot_q4_0x8_cols(const block_q4_0x8 * x, const col_slot * y, int width, int64_t nb, __m256 * acc) {
    const __m256i m4    = _mm256_set1_epi8(0x0F);
    const __m256i flip  = _mm256_set1_epi8(static_cast<char>(0x88));
    const __m256i ones  = _mm256_set1_epi16(1);
    // hadd leaves the rows as [0 1 4 5 | 2 3 6 7]
    const __m256i order = _mm256_setr_epi32(0, 1, 4, 5, 2, 3, 6, 7);
    __m256        a[NC];
    for (int c = 0; c < NC; ++c) a[c] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; ++b) {
        const auto *  qs = reinterpret_cast<const __m256i *>(x[b].qs);
        const __m256i r0 = _mm256_xor_si256(_mm256_loadu_si256(qs + 0), flip);  // rows 0-3, bytes 0-7
        const __m256i r1 = _mm256_xor_si256(_mm256_loadu_si256(qs + 1), flip);  // rows 4-7, bytes 0-7
        const __m256i r2 = _mm256_xor_si256(_mm256_loadu_si256(qs + 2), flip);  // rows 0-3, bytes 8-15
        const __m256i r3 = _mm256_xor_si256(_mm256_loadu_si256(qs + 3), flip);  // rows 4-7, bytes 8-15
        // low nibbles are quants 0-15 of the block, high nibbles 16-31
        const __m256i lo_q[4] = {_mm256_and_si256(r0, m4), _mm256_and_si256(r2, m4),
                                 _mm256_and_si256(_mm256_srli_epi16(r0, 4), m4), _mm256_and_si256(_mm256_srli_epi16(r2, 4), m4)};
        const __m256i hi_q[4] = {_mm256_and_si256(r1, m4), _mm256_and_si256(r3, m4),
                                 _mm256_and_si256(_mm256_srli_epi16(r1, 4), m4), _mm256_and_si256(_mm256_srli_epi16(r3, 4), m4)};
        const __m256  dw      = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i *>(x[b].d)));
        const col_slot * yb = y + b * width;
        for (int c = 0; c < NC; ++c) {
            // the column's quants 0-7, 8-15, 16-23, 24-31, each repeated for 4 rows; int16
            // sums stay below 4·2·15·127 < 2^15
            const int8_t * q8 = yb[c].qs;
            __m256i        yk = _mm256_broadcastq_epi64(_mm_loadl_epi64(reinterpret_cast<const __m128i *>(q8)));
            __m256i        lo = _mm256_maddubs_epi16(lo_q[0], yk);
            __m256i        hi = _mm256_maddubs_epi16(hi_q[0], yk);
            for (int k = 1; k < 4; ++k) {
                yk = _mm256_broadcastq_epi64(_mm_loadl_epi64(reinterpret_cast<const __m128i *>(q8 + 8 * k)));
                lo               = _mm256_add_epi16(lo, _mm256_maddubs_epi16(lo_q[k], yk));
                hi               = _mm256_add_epi16(hi, _mm256_maddubs_epi16(hi_q[k], yk));
            }
            __m256i isum = _mm256_hadd_epi32(_mm256_madd_epi16(lo, ones), _mm256_madd_epi16(hi, ones));
            isum         = _mm256_add_epi32(_mm256_permutevar8x32_epi32(isum, order), _mm256_set1_epi32(yb[c].off[0]));
            a[c]         = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_mul_ps(dw, _mm256_set1_ps(yb[c].d)), a[c]);
        }
    }
    for (int c = 0; c < NC; ++c) acc[c] = a[c];
}

// The same with AVX-512 VNNI, for ggml variants that run it: the 8 rows' 8-byte pieces fill one
// 512-bit register, so four vpdpbusd make each row's integer dot as two int32 halves (the
// maddubs/madd/add chain above is one instruction each). Same integers, same float steps, so
// the same bits as dot_q4_0x8_cols.
// Repacked Q8_0 (block_q8_0x8) goes the same way with its bytes taken as they are (already
// unsigned) and the lanes starting at −128·Σ y: per block and row the exact integer Σ w·y, then
// acc_r += isum_r · (d_w,r · d_y) with one FMA, as ggml's repacked kernels do per block. ggml's
// own Q8_0 kernels (vec_dot_q8_0_q8_0, tinyBLAS) make the same integers but add the float
// products in another order, so results agree with theirs within float rounding, not bit for bit.
XGLM_AVX512_BEGIN
// A block's quants for vpdpbusd, unsigned: 64-bit lane r of q[k] holds row r's quants 8k..8k+7.
XGLM_AVX512_VNNI inline void x8_quants(const block_q4_0x8 & x, __m512i q[4]) {
    const __m512i m4   = _mm512_set1_epi8(0x0F);
    const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x88));
    // 64-bit lane r holds row r's bytes 0-7 (lo) and 8-15 (hi): low nibbles quants 0-15, high 16-31
    const __m512i lo = _mm512_xor_si512(_mm512_loadu_si512(x.qs), flip);
    const __m512i hi = _mm512_xor_si512(_mm512_loadu_si512(x.qs + 64), flip);
    q[0]             = _mm512_and_si512(lo, m4);
    q[1]             = _mm512_and_si512(hi, m4);
    q[2]             = _mm512_and_si512(_mm512_srli_epi16(lo, 4), m4);
    q[3]             = _mm512_and_si512(_mm512_srli_epi16(hi, 4), m4);
}
XGLM_AVX512_VNNI inline void x8_quants(const block_q8_0x8 & x, __m512i q[4]) {
    for (int k = 0; k < 4; ++k) q[k] = _mm512_loadu_si512(x.qs + 64 * k);
}

template <int NC, typename Block>
XGLM_AVX512_VNNI void dot_x8_cols_vnni(const Block * x, const col_slot * y, int width, int64_t nb, __m256 * acc) {
    __m256 a[NC];
    for (int c = 0; c < NC; ++c) a[c] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; ++b) {
        __m512i q[4];
        x8_quants(x[b], q);
        const __m256     dw = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i *>(x[b].d)));
        const col_slot * yb = y + b * width;
        for (int c = 0; c < NC; ++c) {
            const int8_t * q8 = yb[c].qs;
            int64_t        off;
            std::memcpy(&off, yb[c].off, sizeof off);
            __m512i s = _mm512_set1_epi64(off);  // each row's first lane starts at −bias·Σ q_h
            for (int k = 0; k < 4; ++k) {
                int64_t y8;
                std::memcpy(&y8, q8 + 8 * k, sizeof y8);
                s = _mm512_dpbusd_epi32(s, q[k], _mm512_set1_epi64(y8));
            }
            // row r = the two int32 halves of lane r
            const __m256i isum = _mm512_cvtepi64_epi32(_mm512_add_epi32(s, _mm512_srli_epi64(s, 32)));
            a[c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_mul_ps(dw, _mm256_set1_ps(yb[c].d)), a[c]);
        }
    }
    for (int c = 0; c < NC; ++c) acc[c] = a[c];
}

// --- Q4_K (repacked by ggml, 8 rows at a time) × Q8_K, AVX-512 VNNI ----------------------

// A column's super-block as the Q4_K kernel reads it: the Q8_K block (ggml's reference quantizer,
// as mul_mat quantizes for Q4_K on x86) and the sums of its quants per 32-quant sub-block, two
// sub-blocks per int32 as int16 pairs (2k low, 2k + 1 high; |sum| ≤ 32·127) for vpmaddwd.
struct q4_K_slot {
    block_q8_K q;
    int32_t    sub_sums[4];
};

XGLM_AVX2 void prepare_q4_K_column(const float * x, q4_K_slot * tile, int slot, int width, int64_t n) {
    const int64_t nb = n / QK_K;
    thread_local std::vector<block_q8_K> q;
    q.resize(nb);
    quantize_q8_K(x, q.data(), n);
    for (int64_t i = 0; i < nb; ++i) {
        q4_K_slot & c = tile[i * width + slot];
        c.q           = q[i];
        for (int k = 0; k < 4; ++k) {
            const int32_t lo = q[i].bsums[4 * k] + q[i].bsums[4 * k + 1];
            const int32_t hi = q[i].bsums[4 * k + 2] + q[i].bsums[4 * k + 3];
            c.sub_sums[k]    = static_cast<int32_t>(static_cast<uint32_t>(static_cast<uint16_t>(lo)) | static_cast<uint32_t>(hi) << 16);
        }
    }
}

// Sub-block `sub`'s 12 bytes of a block_q4_Kx8's scales -> the 8 rows' scales and mins.
inline void q4_Kx8_scales(const uint8_t * b, uint8_t sc[8], uint8_t m[8]) {
    for (int r = 0; r < 4; ++r) {
        sc[r]     = b[r] & 63;
        m[r]      = b[4 + r] & 63;
        sc[r + 4] = (b[8 + r] & 15) | (b[r] >> 6) << 4;
        m[r + 4]  = (b[8 + r] >> 4) | (b[4 + r] >> 6) << 4;
    }
}

// Rows 8g..8g+7 (x: the group's super-blocks) · NC columns: per super-block and row the exact
// integers of ggml's Q4_K × Q8_K dot, Σ_sub scale·Σ q·y and Σ_sub min·Σ y, then
// acc_r += (d_y·d_r)·sumi − (d_y·dmin_r)·summ in float. The integers are ggml's; the float steps
// are per row where ggml's vec_dot keeps 8 partial lanes, so results agree with mul_mat within
// float rounding, not bit for bit. Each sub-block's 4 vpdpbusd cover the 8 rows (quants unsigned,
// activations signed: no offset); its scales multiply each row's sum in a 64-bit lane.
template <int NC>
XGLM_AVX512_VNNI void dot_q4_Kx8_cols_vnni(const block_q4_Kx8 * x, const q4_K_slot * y, int width, int64_t nb, __m256 * acc) {
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    __m256        a[NC];
    for (int c = 0; c < NC; ++c) a[c] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; ++b) {
        const block_q4_Kx8 & xb = x[b];
        alignas(16) uint8_t  s8[8][8], m8[8][8];
        for (int sub = 0; sub < 8; ++sub) q4_Kx8_scales(xb.scales + 12 * sub, s8[sub], m8[sub]);
        __m256i mins[4];  // row r: min of sub-block 2k | min of 2k + 1 << 16
        for (int k = 0; k < 4; ++k) {
            const __m256i lo = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i *>(m8[2 * k])));
            const __m256i hi = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i *>(m8[2 * k + 1])));
            mins[k]          = _mm256_or_si256(lo, _mm256_slli_epi32(hi, 16));
        }
        const q4_K_slot * yb = y + b * width;
        __m512i           isum[NC];
        for (int c = 0; c < NC; ++c) isum[c] = _mm512_setzero_si512();
        for (int j = 0; j < 4; ++j) {  // sub-blocks 2j (low nibbles) and 2j + 1 (high)
            __m512i lo[4], hi[4];
            for (int k = 0; k < 4; ++k) {
                const __m512i v = _mm512_loadu_si512(xb.qs + 256 * j + 64 * k);
                lo[k]           = _mm512_and_si512(v, m4);
                hi[k]           = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
            }
            const __m512i sc_lo = _mm512_cvtepu8_epi64(_mm_loadl_epi64(reinterpret_cast<const __m128i *>(s8[2 * j])));
            const __m512i sc_hi = _mm512_cvtepu8_epi64(_mm_loadl_epi64(reinterpret_cast<const __m128i *>(s8[2 * j + 1])));
            for (int c = 0; c < NC; ++c) {
                const int8_t * q8 = yb[c].q.qs + 64 * j;
                __m512i        s0 = _mm512_setzero_si512(), s1 = _mm512_setzero_si512();
                for (int k = 0; k < 4; ++k) {
                    int64_t y0, y1;
                    std::memcpy(&y0, q8 + 8 * k, sizeof y0);
                    std::memcpy(&y1, q8 + 32 + 8 * k, sizeof y1);
                    s0 = _mm512_dpbusd_epi32(s0, lo[k], _mm512_set1_epi64(y0));
                    s1 = _mm512_dpbusd_epi32(s1, hi[k], _mm512_set1_epi64(y1));
                }
                // each row's two halves into the low half of its 64-bit lane, times its scale
                s0      = _mm512_add_epi32(s0, _mm512_srli_epi64(s0, 32));
                s1      = _mm512_add_epi32(s1, _mm512_srli_epi64(s1, 32));
                isum[c] = _mm512_add_epi64(isum[c], _mm512_add_epi64(_mm512_mul_epi32(s0, sc_lo), _mm512_mul_epi32(s1, sc_hi)));
            }
        }
        const __m256 dw   = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i *>(xb.d)));
        const __m256 dmin = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i *>(xb.dmin)));
        for (int c = 0; c < NC; ++c) {
            __m256i summ = _mm256_madd_epi16(mins[0], _mm256_set1_epi32(yb[c].sub_sums[0]));
            for (int k = 1; k < 4; ++k) summ = _mm256_add_epi32(summ, _mm256_madd_epi16(mins[k], _mm256_set1_epi32(yb[c].sub_sums[k])));
            const __m256 dy   = _mm256_set1_ps(yb[c].q.d);
            const __m256 sumi = _mm256_cvtepi32_ps(_mm512_cvtepi64_epi32(isum[c]));
            a[c]              = _mm256_fmadd_ps(_mm256_mul_ps(dy, dw), sumi, a[c]);
            a[c]              = _mm256_fnmadd_ps(_mm256_mul_ps(dy, dmin), _mm256_cvtepi32_ps(summ), a[c]);
        }
    }
    for (int c = 0; c < NC; ++c) acc[c] = a[c];
}

XGLM_AVX512_END

template <typename Block, typename Slot>
using x8_slot_tile_fn = void (*)(const Block *, const Slot *, int, int64_t, __m256 *);
constexpr x8_slot_tile_fn<block_q4_Kx8, q4_K_slot> q4_Kx8_tiles_vnni[] = {nullptr,
                                                                          dot_q4_Kx8_cols_vnni<1>,
                                                                          dot_q4_Kx8_cols_vnni<2>,
                                                                          dot_q4_Kx8_cols_vnni<3>,
                                                                          dot_q4_Kx8_cols_vnni<4>,
                                                                          dot_q4_Kx8_cols_vnni<5>,
                                                                          dot_q4_Kx8_cols_vnni<6>,
                                                                          dot_q4_Kx8_cols_vnni<7>,
                                                                          dot_q4_Kx8_cols_vnni<8>};

template <typename Block>
using x8_tile_fn = x8_slot_tile_fn<Block, col_slot>;
using q4_0x8_tile_fn = x8_tile_fn<block_q4_0x8>;

// Column tiles: as many columns per weight pass as the registers hold (16 ymm for AVX2, 32 with
// AVX-512); index = the tile's column count.
constexpr q4_0x8_tile_fn q4_0x8_tiles[] = {nullptr, dot_q4_0x8_cols<1>, dot_q4_0x8_cols<2>, dot_q4_0x8_cols<3>,
                                           dot_q4_0x8_cols<4>};
constexpr q4_0x8_tile_fn q4_0x8_tiles_vnni[] = {nullptr,
                                                dot_x8_cols_vnni<1, block_q4_0x8>,
                                                dot_x8_cols_vnni<2, block_q4_0x8>,
                                                dot_x8_cols_vnni<3, block_q4_0x8>,
                                                dot_x8_cols_vnni<4, block_q4_0x8>,
                                                dot_x8_cols_vnni<5, block_q4_0x8>,
                                                dot_x8_cols_vnni<6, block_q4_0x8>,
                                                dot_x8_cols_vnni<7, block_q4_0x8>,
                                                dot_x8_cols_vnni<8, block_q4_0x8>};
constexpr x8_tile_fn<block_q8_0x8> q8_0x8_tiles_vnni[] = {nullptr,
                                                          dot_x8_cols_vnni<1, block_q8_0x8>,
                                                          dot_x8_cols_vnni<2, block_q8_0x8>,
                                                          dot_x8_cols_vnni<3, block_q8_0x8>,
                                                          dot_x8_cols_vnni<4, block_q8_0x8>,
                                                          dot_x8_cols_vnni<5, block_q8_0x8>,
                                                          dot_x8_cols_vnni<6, block_q8_0x8>,
                                                          dot_x8_cols_vnni<7, block_q8_0x8>,
                                                          dot_x8_cols_vnni<8, block_q8_0x8>};

// Where a product's results go, and what is applied to them on the way (xglm_gemv_fuse).
struct gemv_out {
    const float * bias;      // [n_rows] or nullptr
    bool          gelu;
    const float * residual;  // column c at residual + c·residual_stride, or nullptr
    size_t        residual_stride;
    float *       out;  // column c at out + c·n_rows
    int64_t       n_rows;
};

// groups [g0, g1) of 8 rows · all columns (+ bias, then GELU or + residual if asked). No
// software prefetch: with it the one-column kernel measured no faster than ggml's (1.0-1.1x),
// without it 1.2x; the hardware prefetcher keeps up here.
// cols: the tiles of prepare_x8_column, one per `width` columns, nb · width slots each. tiles[nc]:
// the kernel for nc columns, nc up to `tile`.
template <typename Block, typename Slot = col_slot>
XGLM_AVX2 void dot_groups_x8(const char * w, size_t group_bytes, const Slot * cols, int width, int n_cols, int64_t nb,
                             const x8_slot_tile_fn<Block, Slot> * tiles, int tile, const gemv_out & o, int64_t g0, int64_t g1) {
    // column blocks, so that a block's prepared columns stay in L2 while every group passes
    for (int b0 = 0; b0 < n_cols; b0 += column_block) {
        const int b1 = std::min(n_cols, b0 + column_block);
        for (int64_t g = g0; g < g1; ++g) {
            const auto * x = reinterpret_cast<const Block *>(w + g * group_bytes);
            for (int c0 = b0; c0 < b1; c0 += tile) {
                const int nc = std::min(tile, b1 - c0);
                __m256    acc[8];
                // c0's tile of the layout, then its slot: a kernel tile never spans two (width is
                // 8, a multiple of both kernel tiles, or all the columns there are)
                const Slot * y = cols + (c0 / width) * nb * width + c0 % width;
                tiles[nc](x, y, width, nb, acc);
                for (int c = 0; c < nc; ++c) {
                    __m256 v = acc[c];
                    if (o.bias) v = _mm256_add_ps(v, _mm256_loadu_ps(o.bias + 8 * g));
                    if (o.gelu) v = xglm_gelu_erf_8(v);
                    if (o.residual) v = _mm256_add_ps(v, _mm256_loadu_ps(o.residual + (c0 + c) * o.residual_stride + 8 * g));
                    _mm256_storeu_ps(o.out + (c0 + c) * o.n_rows + 8 * g, v);
                }
            }
        }
    }
}

// --- Q8_0 (plain rows, 8 at a time) × Q8_0 ---------------------------------------------------

// One Q8_0 row · NC Q8_0 columns as ggml's AVX2 vec_dot_q8_0_q8_0 computes each: per block the
// 8 int32 lanes of Σ over 4 bytes of w·y (|w| · sign(y, w) by maddubs, then pairs), converted,
// acc += (d_w·d_y) · lanes, and the 8 lanes summed at the end. |w| is made once for all NC
// columns. out[c] = the row · column c.
template <int NC>
XGLM_AVX2 void dot_q8_0_row_cols(const block_q8_0 * x, const q8_0_column * y, int64_t nb, float * out) {
    const __m256i ones = _mm256_set1_epi16(1);
    __m256        acc[NC];
    for (int c = 0; c < NC; ++c) acc[c] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; ++b) {
        const __m256i w  = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(x[b].qs));
        const __m256i aw = _mm256_sign_epi8(w, w);
        const float   dx = _cvtsh_ss(x[b].d);
        for (int c = 0; c < NC; ++c) {
            const __m256i sy = _mm256_sign_epi8(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(y[c].q[b].qs)), w);
            const __m256  q  = _mm256_cvtepi32_ps(_mm256_madd_epi16(ones, _mm256_maddubs_epi16(aw, sy)));
            acc[c]           = _mm256_fmadd_ps(_mm256_set1_ps(dx * y[c].d[b]), q, acc[c]);
        }
    }
    for (int c = 0; c < NC; ++c) out[c] = xglm_hsum_8(acc[c]);
}

using q8_0_row_fn = void (*)(const block_q8_0 *, const q8_0_column *, int64_t, float *);
constexpr q8_0_row_fn q8_0_tiles[] = {nullptr, dot_q8_0_row_cols<1>, dot_q8_0_row_cols<2>, dot_q8_0_row_cols<3>, dot_q8_0_row_cols<4>};

// groups [g0, g1) of 8 plain rows · all columns, with the epilogue of dot_groups_x8: the AVX2
// form, for CPUs without VNNI, used at decode sizes only (graph.cpp). A VNNI form on plain rows
// (two rows per vpdpbusd) measured 1.4x slower than this one at 2 columns and behind ggml's
// tinyBLAS at 64; with VNNI the weights are rearranged at load instead (dot_x8_cols_vnni).
XGLM_AVX2 void dot_groups_q8_0(const char * w, size_t row_bytes, const q8_0_column * cols, int n_cols, int64_t nb,
                               const gemv_out & o, int64_t g0, int64_t g1) {
    constexpr int tile = 4;
    for (int b0 = 0; b0 < n_cols; b0 += column_block) {
        const int b1 = std::min(n_cols, b0 + column_block);
        for (int64_t g = g0; g < g1; ++g) {
            for (int c0 = b0; c0 < b1; c0 += tile) {
                const int nc = std::min(tile, b1 - c0);
                alignas(32) float v[tile][8];  // [column][row of the group]
                for (int r = 0; r < 8; ++r) {
                    float part[tile];
                    q8_0_tiles[nc](reinterpret_cast<const block_q8_0 *>(w + (8 * g + r) * row_bytes), cols + c0, nb, part);
                    for (int c = 0; c < nc; ++c) v[c][r] = part[c];
                }
                for (int c = 0; c < nc; ++c) {
                    __m256 r = _mm256_load_ps(v[c]);
                    if (o.bias) r = _mm256_add_ps(r, _mm256_loadu_ps(o.bias + 8 * g));
                    if (o.gelu) r = xglm_gelu_erf_8(r);
                    if (o.residual) r = _mm256_add_ps(r, _mm256_loadu_ps(o.residual + (c0 + c) * o.residual_stride + 8 * g));
                    _mm256_storeu_ps(o.out + (c0 + c) * o.n_rows + 8 * g, r);
                }
            }
        }
    }
}

// --- Q6_K rows ----------------------------------------------------------------------------

using q6_K_tile_fn = void (*)(const block_q6_K *, const block_q8_K * const *, int, float *);
constexpr q6_K_tile_fn q6_K_tiles[] = {nullptr, dot_q6_K_cols<1>, dot_q6_K_cols<2>, dot_q6_K_cols<3>, dot_q6_K_cols<4>};
constexpr q6_K_tile_fn q6_K_tiles_vnni[] = {nullptr,
                                            dot_q6_K_cols_vnni<1>,
                                            dot_q6_K_cols_vnni<2>,
                                            dot_q6_K_cols_vnni<3>,
                                            dot_q6_K_cols_vnni<4>,
                                            dot_q6_K_cols_vnni<5>,
                                            dot_q6_K_cols_vnni<6>,
                                            dot_q6_K_cols_vnni<7>,
                                            dot_q6_K_cols_vnni<8>};
using q5_K_tile_fn = void (*)(const block_q5_K *, const block_q8_K * const *, int, float *);
constexpr q5_K_tile_fn q5_K_tiles_vnni[] = {nullptr,
                                            dot_q5_K_cols_vnni<1>,
                                            dot_q5_K_cols_vnni<2>,
                                            dot_q5_K_cols_vnni<3>,
                                            dot_q5_K_cols_vnni<4>,
                                            dot_q5_K_cols_vnni<5>,
                                            dot_q5_K_cols_vnni<6>,
                                            dot_q5_K_cols_vnni<7>,
                                            dot_q5_K_cols_vnni<8>};

// rows [r0, r1) · all columns (+ bias), asking for weight bytes prefetch_distance ahead. One
// column takes dot_q6_K, which streams the block instead of holding it unpacked.
// The GELU or the residual add of `o` over the finished rows [r0, r1) of every column (the row
// kernels write one value per row and column; this pass goes along the rows, 8 at a time).
XGLM_AVX2 void row_epilogue(const gemv_out & o, int n_cols, int64_t r0, int64_t r1) {
    if (!o.gelu && !o.residual) return;
    for (int c = 0; c < n_cols; ++c) {
        float * out = o.out + c * o.n_rows;
        for (int64_t r = r0; r < r1; r += 8) {
            const int n = static_cast<int>(std::min<int64_t>(8, r1 - r));
            alignas(32) float v[8] = {}, res[8] = {};
            std::memcpy(v, out + r, n * sizeof(float));
            if (o.residual) std::memcpy(res, o.residual + c * o.residual_stride + r, n * sizeof(float));
            __m256 x = _mm256_load_ps(v);
            if (o.gelu) x = xglm_gelu_erf_8(x);
            if (o.residual) x = _mm256_add_ps(x, _mm256_load_ps(res));
            _mm256_store_ps(v, x);
            std::memcpy(out + r, v, n * sizeof(float));
        }
    }
}

// rows [r0, r1) · all columns (+ bias, then GELU or + residual if asked), asking for weight bytes
// prefetch_distance ahead. tiles[nc]: the kernel for nc columns, nc up to `tile`; `single`, when
// given, takes one column (dot_q6_K streams the block instead of holding it unpacked).
template <typename Block>
XGLM_AVX2 void dot_rows(const char * w, size_t row_bytes, const block_q8_K * const * cols, int n_cols, int nb,
                        void (*const *tiles)(const Block *, const block_q8_K * const *, int, float *), int tile,
                        float (*single)(const void *, const void *, int64_t), const gemv_out & o, int64_t r0, int64_t r1) {
    for (int b0 = 0; b0 < n_cols; b0 += column_block) {  // as in dot_groups_x8
        const int b1 = std::min(n_cols, b0 + column_block);
        for (int64_t r = r0; r < r1; ++r) {
            const char * row = w + r * row_bytes;
            for (size_t off = 0; off < row_bytes; off += 64) _mm_prefetch(row + prefetch_distance + off, _MM_HINT_T0);
            const float bias = o.bias ? o.bias[r] : 0.0f;
            if (n_cols == 1 && single) {
                const float v = single(row, cols[0], int64_t(nb) * QK_K);
                o.out[r]      = o.bias ? v + bias : v;
                continue;
            }
            for (int c0 = b0; c0 < b1; c0 += tile) {
                const int nc = std::min(tile, b1 - c0);
                float     v[8];
                tiles[nc](reinterpret_cast<const Block *>(row), cols + c0, nb, v);
                for (int c = 0; c < nc; ++c) o.out[(c0 + c) * o.n_rows + r] = o.bias ? v[c] + bias : v[c];
            }
        }
    }
    row_epilogue(o, n_cols, r0, r1);
}

#endif

// dst = src[0]ᵀ · src[1] (+ src[2]); thread ith of nth takes a contiguous share of the rows.
// The op's options travel in its userdata pointer: flag bits below, the norm's eps as the float
// bits of the upper 32 (custom ops take no parameters). Sources: w, x, then b, norm_w and norm_b,
// residual, each when its flag is set.
// The norm's code path (xglm_kernel_isa) takes bits 4-5; bit 6 asks for the VNNI kernels.
constexpr uint64_t has_bias = 1, has_norm = 2, has_gelu = 4, has_residual = 8, use_vnni = 64;
constexpr int      norm_isa_shift = 4;

void * encode_options(const ggml_tensor * b, const xglm_gemv_fuse & f) {
    uint64_t bits = (b ? has_bias : 0) | (f.norm_w ? has_norm : 0) | (f.gelu ? has_gelu : 0) | (f.residual ? has_residual : 0) |
                    static_cast<uint64_t>(f.norm_isa) << norm_isa_shift | (f.vnni ? use_vnni : 0);
    uint32_t eps  = 0;
    std::memcpy(&eps, &f.norm_eps, sizeof eps);
    return reinterpret_cast<void *>(static_cast<uintptr_t>(bits | static_cast<uint64_t>(eps) << 32));
}

// dst = src[0]ᵀ · src[1] (+ bias …); thread ith of nth takes a contiguous share of the rows.
void decode_gemv_op(ggml_tensor * dst, int ith, int nth, void * userdata) {
    const auto opts = static_cast<uint64_t>(reinterpret_cast<uintptr_t>(userdata));
#if defined(__x86_64__)
    int                 src    = 2;
    const ggml_tensor * w      = dst->src[0];
    const ggml_tensor * x      = dst->src[1];
    const float *       bias   = opts & has_bias ? static_cast<const float *>(dst->src[src++]->data) : nullptr;
    const ggml_tensor * norm_w = opts & has_norm ? dst->src[src++] : nullptr;
    const ggml_tensor * norm_b = opts & has_norm ? dst->src[src++] : nullptr;
    const ggml_tensor * res    = opts & has_residual ? dst->src[src++] : nullptr;
    const int64_t       n      = w->ne[0];
    const int64_t       n_rows = w->ne[1];
    const int           n_cols = static_cast<int>(x->ne[1]);
    const gemv_out      o      = {bias,
                                  (opts & has_gelu) != 0,
                                  res ? static_cast<const float *>(res->data) : nullptr,
                                  res ? res->nb[1] / sizeof(float) : 0,
                                  static_cast<float *>(dst->data),
                                  n_rows};

    // each thread prepares every column itself (a few µs each; ~2% of a q4_0 prefill, perf):
    // custom ops have no barrier to share them
    thread_local std::vector<uint8_t> col;
    thread_local std::vector<float>   normed;
    const size_t                      col_bytes = column_bytes(w->type, n);
    // the 8-row-group kernels: whole tiles of `width` slots (the last one's spare slots are never read)
    const bool    q8_0x8  = xglm_is_q8_0x8(w);
    const bool    x8      = w->type == GGML_TYPE_Q4_0 || q8_0x8;
    const bool    q4_K    = w->type == GGML_TYPE_Q4_K;
    const int     width   = std::min(n_cols, x8_tile);
    const int64_t n_slots = (n_cols + width - 1) / width * width;
    col.resize(x8     ? sizeof(col_slot) * (n / QK8_0) * n_slots
               : q4_K ? sizeof(q4_K_slot) * (n / QK_K) * n_slots
                      : col_bytes * n_cols);
    if (norm_w) normed.resize(n);
    const auto isa = static_cast<xglm_kernel_isa>(opts >> norm_isa_shift & 3);
    for (int c = 0; c < n_cols; ++c) {
        const auto * xf = reinterpret_cast<const float *>(static_cast<const char *>(x->data) + c * x->nb[1]);
        if (norm_w) {
            const uint32_t eps_bits = static_cast<uint32_t>(opts >> 32);
            float          eps;
            std::memcpy(&eps, &eps_bits, sizeof eps);
            xglm_layer_norm_row(xf, static_cast<const float *>(norm_w->data), static_cast<const float *>(norm_b->data), eps, n,
                                normed.data(), isa);
            xf = normed.data();
        }
        if (q4_K) {
            prepare_q4_K_column(xf, reinterpret_cast<q4_K_slot *>(col.data()) + (c / width) * (n / QK_K) * width, c % width, width, n);
        } else if (x8) {
            prepare_x8_column(xf, reinterpret_cast<col_slot *>(col.data()) + (c / width) * (n / QK8_0) * width, c % width, width, n,
                              q8_0x8 ? 128 : 8);
        } else if (w->type == GGML_TYPE_Q8_0) {
            prepare_q8_0(xf, col.data() + c * col_bytes, n);
        } else {
            quantize_q8_K(xf, col.data() + c * col_bytes, n);
        }
    }

    if (w->type == GGML_TYPE_Q4_0 || w->type == GGML_TYPE_Q8_0 || q4_K) {
        // groups of 8 rows; shares of an even number of groups, 16 rows as below
        const int64_t n_groups = n_rows / 8;
        const int64_t per      = (n_groups / nth + 1) & ~int64_t(1);
        const int64_t g0       = std::min<int64_t>(n_groups, per * ith);
        const int64_t g1       = ith == nth - 1 ? n_groups : std::min<int64_t>(n_groups, g0 + per);
        if (q4_K) {  // VNNI only (the plan's gemv_k)
            dot_groups_x8<block_q4_Kx8, q4_K_slot>(static_cast<const char *>(w->data), sizeof(block_q4_Kx8) * (n / QK_K),
                                                   reinterpret_cast<const q4_K_slot *>(col.data()), width, n_cols, n / QK_K,
                                                   q4_Kx8_tiles_vnni, 8, o, g0, g1);
            return;
        }
        const auto * slots = reinterpret_cast<const col_slot *>(col.data());
        if (q8_0x8) {  // VNNI only: the weights were repacked because the plan had it (model.cpp)
            dot_groups_x8<block_q8_0x8>(static_cast<const char *>(w->data), sizeof(block_q8_0x8) * (n / QK8_0), slots, width, n_cols,
                                        n / QK8_0, q8_0x8_tiles_vnni, 8, o, g0, g1);
            return;
        }
        if (w->type == GGML_TYPE_Q4_0) {
            const bool vnni = (opts & use_vnni) != 0;
            dot_groups_x8<block_q4_0x8>(static_cast<const char *>(w->data), sizeof(block_q4_0x8) * (n / QK8_0), slots, width, n_cols,
                                        n / QK8_0, vnni ? q4_0x8_tiles_vnni : q4_0x8_tiles, vnni ? 8 : 4, o, g0, g1);
            return;
        }
        thread_local std::vector<q8_0_column> cols;
        cols.resize(n_cols);
        for (int c = 0; c < n_cols; ++c) cols[c] = q8_0_parts(col.data() + c * col_bytes, n / QK8_0);
        dot_groups_q8_0(static_cast<const char *>(w->data), w->nb[1], cols.data(), n_cols, n / QK8_0, o, g0, g1);
        return;
    }

    // shares rounded to 16 rows so no two threads write the same output cache line
    const int64_t      per = (n_rows / nth + 15) & ~int64_t(15);
    const int64_t      r0  = std::min<int64_t>(n_rows, per * ith);
    const int64_t      r1  = ith == nth - 1 ? n_rows : std::min<int64_t>(n_rows, r0 + per);
    thread_local std::vector<const block_q8_K *> q8_K_cols;
    q8_K_cols.resize(n_cols);
    for (int c = 0; c < n_cols; ++c) q8_K_cols[c] = reinterpret_cast<const block_q8_K *>(col.data() + c * col_bytes);
    const char * wd = static_cast<const char *>(w->data);
    const int    nbk = static_cast<int>(n / QK_K);
    if (w->type == GGML_TYPE_Q5_K) {  // VNNI only (the plan's gemv_k)
        dot_rows<block_q5_K>(wd, w->nb[1], q8_K_cols.data(), n_cols, nbk, q5_K_tiles_vnni, 8, nullptr, o, r0, r1);
    } else {
        const bool vnni = (opts & use_vnni) != 0;
        dot_rows<block_q6_K>(wd, w->nb[1], q8_K_cols.data(), n_cols, nbk, vnni ? q6_K_tiles_vnni : q6_K_tiles, vnni ? 8 : 4, dot_q6_K, o,
                             r0, r1);
    }
#else
    (void)dst, (void)ith, (void)nth, (void)opts;
#endif
}

// The row length each kernel needs: whole blocks.
int64_t row_multiple(ggml_type type) {
    switch (type) {
        case GGML_TYPE_Q6_K: return ggml_type_size(type) == sizeof(block_q6_K) ? QK_K : 0;
        case GGML_TYPE_Q5_K: return ggml_type_size(type) == sizeof(block_q5_K) ? QK_K : 0;
        case GGML_TYPE_Q4_0: return ggml_type_size(type) * 8 == sizeof(block_q4_0x8) ? QK8_0 : 0;
        case GGML_TYPE_Q8_0: return ggml_type_size(type) == sizeof(block_q8_0) ? QK8_0 : 0;
        case GGML_TYPE_Q4_K: return ggml_type_size(type) * 8 == sizeof(block_q4_Kx8) ? QK_K : 0;
        default:             return 0;
    }
}

// ggml's CPU_REPACK buffer rearranges Q4_0 matmul weights into block_q4_0x8 when the CPU has
// AVX2 and the row count is a multiple of 8 (repack.cpp, ggml_repack_get_optimal_repack_type).
// The same buffer rearranges Q4_K into block_q4_Kx8 on AVX2 (q4_K_8x8_q8_K).
bool is_repacked_x8(const ggml_tensor * w) {
    return w->extra != nullptr && w->buffer != nullptr && w->ne[1] % 8 == 0 &&
           std::strcmp(ggml_backend_buft_name(ggml_backend_buffer_get_type(w->buffer)), "CPU_REPACK") == 0;
}

// What marks a tensor whose data xglm_repack_q8_0x8 rearranged (its `extra`, where ggml's
// CPU_REPACK keeps its own tag for the layouts it makes).
const char q8_0x8_tag = 0;

}  // namespace

bool xglm_q8_0x8_possible(const ggml_tensor * w) {
#if defined(__x86_64__)
    return w->type == GGML_TYPE_Q8_0 && ggml_type_size(w->type) == sizeof(block_q8_0) && w->ne[0] % QK8_0 == 0 && w->ne[1] % 8 == 0 &&
           w->ne[2] == 1 && w->ne[3] == 1 && ggml_is_contiguous(w) && w->extra == nullptr;
#else
    (void)w;
    return false;
#endif
}

void xglm_repack_q8_0x8(const void * src, void * dst, int64_t n_in, int64_t n_rows) {
    const int64_t nb  = n_in / QK8_0;
    const auto *  in  = static_cast<const block_q8_0 *>(src);
    auto *        out = static_cast<block_q8_0x8 *>(dst);
    for (int64_t g = 0; g < n_rows / 8; ++g) {
        for (int64_t b = 0; b < nb; ++b) {
            block_q8_0x8 & o = out[g * nb + b];
            for (int r = 0; r < 8; ++r) {
                const block_q8_0 & x = in[(8 * g + r) * nb + b];
                o.d[r]               = x.d;
                for (int k = 0; k < 4; ++k) {  // 8 quants at a time; + 128 is XOR 0x80 on each byte
                    uint64_t v;
                    std::memcpy(&v, x.qs + 8 * k, 8);
                    v ^= 0x8080808080808080ull;
                    std::memcpy(o.qs + 64 * k + 8 * r, &v, 8);
                }
            }
        }
    }
}

void xglm_quantize_q8_K(const float * x, void * y, int64_t n) {
#if defined(__x86_64__)
    quantize_q8_K(x, y, n);
#else
    quantize_row_q8_K_ref(x, y, n);
#endif
}

void xglm_mark_q8_0x8(ggml_tensor * w) { w->extra = const_cast<char *>(&q8_0x8_tag); }

bool xglm_is_q8_0x8(const ggml_tensor * w) { return w->type == GGML_TYPE_Q8_0 && w->extra == &q8_0x8_tag; }

bool xglm_decode_gemv_weight_usable(const ggml_tensor * w, const ggml_tensor * b) {
    const int64_t multiple = row_multiple(w->type);
    if (b != nullptr && !(b->type == GGML_TYPE_F32 && ggml_nelements(b) == w->ne[1] && ggml_is_contiguous(b))) return false;
    // Q4_0 only as repacked by ggml on an AVX2 CPU (8-row groups); the other types only in plain
    // rows (extra == nullptr), not in a layout rearranged by a CPU_REPACK buffer
    const bool layout_ok = w->type == GGML_TYPE_Q4_0 || w->type == GGML_TYPE_Q4_K ? is_repacked_x8(w)
                           : w->type == GGML_TYPE_Q8_0 ? (w->extra == nullptr || xglm_is_q8_0x8(w)) && w->ne[1] % 8 == 0  // 8-row groups
                                                       : w->extra == nullptr;
    return multiple > 0 && layout_ok && w->ne[0] % multiple == 0 && w->ne[2] == 1 && w->ne[3] == 1 &&
           ggml_is_contiguous(w);
}

bool xglm_decode_gemv_usable(const ggml_tensor * w, const ggml_tensor * x, const ggml_tensor * b) {
    return xglm_decode_gemv_weight_usable(w, b) && x->type == GGML_TYPE_F32 && x->ne[0] == w->ne[0] && x->ne[1] >= 1 &&
           x->ne[1] <= INT32_MAX && x->ne[2] == 1 && x->ne[3] == 1 && x->nb[0] == sizeof(float);
}

ggml_tensor * xglm_decode_gemv(ggml_context * ctx, ggml_tensor * w, ggml_tensor * x, ggml_tensor * b, const xglm_gemv_fuse & fuse) {
    if (fuse.gelu && fuse.residual) return nullptr;
    if ((fuse.norm_w == nullptr) != (fuse.norm_b == nullptr)) return nullptr;
    auto f32_vector = [](const ggml_tensor * t, int64_t n) {
        return t->type == GGML_TYPE_F32 && ggml_nelements(t) == n && ggml_is_contiguous(t);
    };
    if (fuse.norm_w && !(f32_vector(fuse.norm_w, w->ne[0]) && f32_vector(fuse.norm_b, w->ne[0]))) return nullptr;
    if (fuse.residual && !(fuse.residual->type == GGML_TYPE_F32 && fuse.residual->ne[0] == w->ne[1] &&
                           fuse.residual->ne[1] == x->ne[1] && ggml_nrows(fuse.residual) == x->ne[1] &&
                           fuse.residual->nb[0] == sizeof(float))) {
        return nullptr;
    }
    ggml_tensor * args[6];
    int           n_args = 0;
    for (ggml_tensor * t : {w, x, b, fuse.norm_w, fuse.norm_b, fuse.residual}) {
        if (t) args[n_args++] = t;
    }
    return ggml_custom_4d(ctx, GGML_TYPE_F32, w->ne[1], x->ne[1], 1, 1, args, n_args, decode_gemv_op, GGML_N_TASKS_MAX,
                          encode_options(b, fuse));
}
