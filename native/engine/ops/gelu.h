// GELU(x + b) over a batch of rows as one ggml custom op, for the feed-forward of quantized
// models: ggml's add + gelu_erf nodes call libm's erff per element (~6% of a 564M q4_0 prefill
// of 128 tokens); this op uses the vectorized erf of simd-math.h (within 1.5e-7) on all threads.
// F32 and F16 models keep ggml's exact nodes: there, libm's erff is part of what the PyTorch
// comparisons measure; with quantized weights the difference is far below their rounding.
#pragma once

#include "ggml.h"

// Whether xglm_gelu_bias applies: x F32 contiguous [n, rows] with n a multiple of 8, b F32
// contiguous [n]. Whether this CPU and the switches allow the op at all is the kernel plan's
// decision (kernel-plan.h).
bool xglm_gelu_bias_usable(const ggml_tensor * x, const ggml_tensor * b);

// GELU(x + b), b broadcast over the rows of x; [n, rows] F32.
ggml_tensor * xglm_gelu_bias(ggml_context * ctx, ggml_tensor * x, ggml_tensor * b);
