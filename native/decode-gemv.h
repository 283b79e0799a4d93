// Weight · one-column products of a decode step (one token, or one logits row) as a ggml
// custom op, for the weight types where ggml's one-column mul_mat leaves speed unused:
//   Q6_K (the token_embd of q4_0/q4_k_m files): ggml reads the 200+ MB weight and computes its
//     dot products one after the other (~16 GB/s effective with 2 threads on Zen 3); here the
//     weight stream is prefetched ahead of the dot products so the two overlap (~23 GB/s, the
//     machine's read bandwidth being ~30).
//   Q4_0 as repacked by ggml's CPU_REPACK buffer (the layer weights of q4_0 files): the same
//     integer dots with half the instructions of ggml's AVX2 gemv, the bias add fused, and for
//     ffn_up the GELU too (ggml's gelu_erf node runs on one thread: ~5% of a 564M token).
// Numerics are ggml's: the column is quantized as mul_mat quantizes it (Q8_K by ggml's own
// quantizer, Q8_0 as ggml's AVX2 quantize_row_q8_0), every block product is the same exact
// integer, and the float sums follow ggml's order, so results are bit-identical (the fused
// GELU's erf is a polynomial within 1.5e-7 of libm's erff, which ggml calls).
// Measured and left to ggml: F16 and Q8_0 (1.0-1.05x and ~1.1x; ggml is near the memory floor).
#pragma once

#include "ggml.h"

// Whether xglm_decode_gemv can compute w · x (+ b) here: w Q6_K in plain rows or Q4_0 repacked
// by ggml (8-row groups), x one F32 column, b nullptr or F32 [n_out], an AVX2+FMA+F16C CPU, and
// XGLM_NO_CUSTOM_GEMV unset (or "0").
bool xglm_decode_gemv_usable(const ggml_tensor * w, const ggml_tensor * x, const ggml_tensor * b);

// w [n_in, n_out], x [n_in, 1] (F32), b [n_out] (F32) or nullptr -> w · x (+ b), [n_out, 1] F32,
// and with gelu, GELU(w · x + b) (Q4_0 weights only; nullptr for other types).
// Only after xglm_decode_gemv_usable returned true.
ggml_tensor * xglm_decode_gemv(ggml_context * ctx, ggml_tensor * w, ggml_tensor * x, ggml_tensor * b, bool gelu = false);
