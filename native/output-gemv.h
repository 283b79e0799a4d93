// The output product of a decode step, logits = output · h for ONE hidden column, as a
// ggml custom op for Q6_K weights (the token_embd type of q4_0/q4_k_m files).
//
// ggml's mul_mat runs its Q6_K dot product and the 200+ MB weight read one after the other
// (~16 GB/s effective with 2 threads on Zen 3); this op prefetches the weight stream ahead of
// the dot products so the two overlap (~23 GB/s, the machine's read bandwidth being ~30).
// Numerics are ggml's: h is quantized to Q8_K blocks by ggml's own quantizer and each block
// product is the same exact integer dot, summed in the same float order.
#pragma once

#include "ggml.h"

// Whether xglm_output_gemv can compute output · h here: Q6_K weights, one F32 column,
// n_embd a multiple of 256, an AVX2+FMA+F16C CPU, and XGLM_NO_CUSTOM_GEMV unset (or "0").
bool xglm_output_gemv_usable(const ggml_tensor * output, const ggml_tensor * h);

// output [n_embd, n_vocab] (Q6_K), h [n_embd, 1] (F32) -> logits [n_vocab, 1] (F32).
// Only after xglm_output_gemv_usable returned true. Logs a line to stderr with XGLM_LOG set.
ggml_tensor * xglm_output_gemv(ggml_context * ctx, ggml_tensor * output, ggml_tensor * h);
