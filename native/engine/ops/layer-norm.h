// One row's layer norm, (x − mean)/sqrt(var + eps)·w + b, with ggml's exact arithmetic (its
// ggml_norm, then ggml_mul by w and ggml_add of b), so a custom op that normalizes its own input
// gives the same bits as the three ggml nodes it replaces. Decode-gemv's ops use it to fold a
// layer's norms into the products that consume them (decode-gemv.h).
#pragma once

#include <cstdint>

#include "kernel-plan.h"

// y[0..n) = LN(x)·w + b. x and y may not overlap. Bit-identical to ggml 0.23's CPU norm → mul →
// add on an AVX2+FMA build (ggml_vec_cvar_f32's 8-lane path) when isa is avx2, on an AVX-512
// build (its 16-lane path) when avx512; with none the variance is summed one element at a time,
// as ggml's scalar path does. isa is the ggml CPU variant's (the kernel plan's isa).
void xglm_layer_norm_row(const float * x, const float * w, const float * b, float eps, int64_t n, float * y,
                         xglm_kernel_isa isa);
