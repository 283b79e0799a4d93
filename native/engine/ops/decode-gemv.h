// Weight · activation products as a ggml custom op, for the weight types where ggml's mul_mat
// leaves speed unused. Named for decode, where they started (one column: the token), they take
// any number of columns: the tokens of a batched decode step (one per active sequence), the
// logits rows of scoring, a prompt's ubatch.
//   Q6_K (the token_embd of q4_0/q4_k_m files): ggml reads the 200+ MB weight and computes its
//     dot products one after the other (~16 GB/s effective with 2 threads on Zen 3); here the
//     weight stream is prefetched ahead of the dot products so the two overlap (~23 GB/s, the
//     machine's read bandwidth being ~30). With several columns ggml unpacks every weight block
//     once per column (one vec_dot per row and column); here once for all of them.
//   Q4_0 as repacked by ggml's CPU_REPACK buffer (the layer weights of q4_0 files): the same
//     integer dots with half the instructions of ggml's AVX2 gemv (a quarter with AVX-512 VNNI),
//     each weight block unpacked once for up to 8 columns, the bias add fused, and optionally
//     the layer norm before, the GELU or the residual add after (xglm_gemv_fuse): ggml's
//     gelu_erf node runs on one thread (~5% of a 564M token) and every small node costs a
//     barrier. Measured faster than ggml's repacked gemm at every token count tried, 1 to 448
//     (bench/step.ts; docs/benchmarks.md).
//   Q8_0 (the layers of q8_0 files), where the plan has AVX-512 VNNI: rearranged at load into
//     8-row groups (xglm_repack_q8_0x8) and computed as repacked Q4_0 is, four vpdpbusd per block
//     for all 8 rows, at any column count: 1.6x faster than ggml's tinyBLAS at prefill sizes,
//     1.1x at one column (bench/step.ts, Zen 4). Its float sums follow ggml's repacked kernels'
//     order, not its plain Q8_0 kernels', so it matches mul_mat within float rounding, not bit
//     for bit. Without VNNI, in plain rows: the same fusions, |w| made once per block for up to 4
//     columns; faster than ggml's kernels up to ~8 columns only (graph.cpp).
//   The K-quant layers of q4_k_m files, where the plan has AVX-512 VNNI (gemv_k): Q4_K as ggml's
//     CPU_REPACK buffer rearranges it (8-row groups; ggml's integers, its repacked kernels' float
//     order), Q5_K and Q6_K in plain rows (ggml's vec_dot bits, each block unpacked once for 8
//     columns). ggml runs Q5_K and Q6_K layers through vec_dot per row and column at every token
//     count: 54% of a q4_k_m prefill (perf, Zen 4) before these kernels.
// Measured and left to ggml: F16 (1.0-1.05x; ggml is near the memory floor).
// Numerics are ggml's (the Q8_0 8-row layout aside, above): each column is quantized as mul_mat quantizes it (Q8_K by ggml's own
// quantizer, Q8_0 as ggml's AVX2 quantize_row_q8_0), every block product is the same exact
// integer, and the float sums follow ggml's order, so results are bit-identical, column by
// column, whatever the column count (the fused GELU's erf is a polynomial within 1.5e-7 of
// libm's erff, which ggml calls).
#pragma once

#include "ggml.h"
#include "kernel-plan.h"

// Whether xglm_decode_gemv can compute w · x (+ b) here: w Q5_K or Q6_K in plain rows, Q4_0 or Q4_K
// repacked by ggml (8-row groups) or Q8_0 in plain rows or our 8-row layout (a multiple of 8 rows), x F32 columns, b nullptr
// or F32 [n_out]. Whether this CPU and the switches allow the op at all, and for which token
// counts, is the kernel plan's and the graph's decision (kernel-plan.h, graph.cpp).
bool xglm_decode_gemv_usable(const ggml_tensor * w, const ggml_tensor * x, const ggml_tensor * b);

// The same for the weight and bias alone (x: any F32 column of w->ne[0] values).
bool xglm_decode_gemv_weight_usable(const ggml_tensor * w, const ggml_tensor * b);

// Q8_0 layer weights for the AVX-512 VNNI kernel: the blocks of 8 consecutive rows side by side
// (block_q8_0x8 in decode-gemv.cpp; the same bytes count), made once at load (model.cpp) where
// the kernel plan has the VNNI products. ggml cannot read that layout: every product over such
// a weight must go through xglm_decode_gemv (graph.cpp routes them all, whatever the count of
// tokens), which takes it at any column count.
// Whether w can be rearranged so: Q8_0 in plain rows, a multiple of 8 of them, on x86-64.
bool xglm_q8_0x8_possible(const ggml_tensor * w);
// src: n_rows plain Q8_0 rows of n_in values; dst: as many bytes, rearranged.
void xglm_repack_q8_0x8(const void * src, void * dst, int64_t n_in, int64_t n_rows);
// x (n values, a multiple of 256) as ggml's Q8_K blocks (292 bytes each), bit for bit as its
// quantize_row_q8_K_ref makes them (the K-quant kernels' columns); AVX2 code on x86-64, only
// where the plan runs the ops.
void xglm_quantize_q8_K(const float * x, void * y, int64_t n);
// Marks w (its `extra`) as holding the rearranged layout; xglm_is_q8_0x8 asks.
void xglm_mark_q8_0x8(ggml_tensor * w);
bool xglm_is_q8_0x8(const ggml_tensor * w);

// What a product may do around w · x + b, sparing the graph the nodes that would do it
// (each node is a barrier for the threads; a 564M decode token had ~480 of them):
struct xglm_gemv_fuse {
    // the input is LN(x)·norm_w + norm_b, with ggml's arithmetic (layer-norm.h)
    ggml_tensor * norm_w   = nullptr;  // F32 [n_in]; with norm_b
    ggml_tensor * norm_b   = nullptr;
    float         norm_eps = 0.0f;
    // the ggml CPU code path whose norm it repeats bit for bit (the plan's isa)
    xglm_kernel_isa norm_isa = xglm_kernel_isa::none;
    bool          gelu     = false;    // GELU (exact erf) after the bias
    ggml_tensor * residual = nullptr;  // F32 [n_out, n_cols] added after the bias
    bool          vnni     = false;    // Q4_0, Q6_K through AVX-512 VNNI (the plan's vnni): same bits, faster
};

// w [n_in, n_out], x [n_in, n_cols] (F32), b [n_out] (F32) or nullptr -> w · x (+ b),
// [n_out, n_cols] F32, with the extras of `fuse`. nullptr when `fuse` asks for what this weight type cannot do.
// Only after xglm_decode_gemv_usable returned true.
ggml_tensor * xglm_decode_gemv(ggml_context * ctx, ggml_tensor * w, ggml_tensor * x, ggml_tensor * b,
                               const xglm_gemv_fuse & fuse = {});
