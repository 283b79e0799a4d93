// Which of xglm-node's own ggml ops a context's graphs use: decided once per context (at
// xglm_context_new) from the ggml CPU code in use and the environment, then read by every graph
// build. The ops' *_usable functions check only shapes, types and layouts; this plan carries the
// CPU and switch decisions, so that they are made in one place and can be shown and tested.
#pragma once

#include <string>
#include <vector>

// The custom ops' code path: the ops run where ggml itself runs AVX2 (+FMA, F16C) code, so a
// forced `XGLM_CPU_VARIANT=x64` runs none of them, and `avx512` tells the ops that repeat ggml's
// arithmetic (layer-norm.h) to follow its AVX-512 paths.
enum class xglm_kernel_isa { none, avx2, avx512 };

struct xglm_kernel_plan {
    xglm_kernel_isa isa       = xglm_kernel_isa::none;  // that of the ggml CPU variant in use
    bool            attention = false;  // attention.h over F16 caches, ubatches under 64 tokens
    bool            gemv_q4_0 = false;  // decode-gemv.h: the fused layer over repacked Q4_0
    bool            gemv_q8_0 = false;  // decode-gemv.h: the fused layer over Q8_0, Q8_0 logits
    bool            gemv_q6_k = false;  // decode-gemv.h: the logits rows from Q6_K weights
    bool            vnni      = false;  // decode-gemv.h: its products through AVX-512 VNNI
    bool            gemv_k    = false;  // decode-gemv.h: K-quant layer products (repacked Q4_K, Q5_K, Q6_K; VNNI only)
    bool            gelu_bias = false;  // gelu.h: bias + GELU of quantized models' feed-forward
    bool            log       = false;  // XGLM_LOG: each graph build says on stderr which ops ran
    // why an op is off (empty when it runs): the switch, or the variant's code
    std::string     attention_off, gemv_off, vnni_off;
};

// One line of a plan: which implementation a kind of graph node gets, and what it is or why
// ggml's (backendInfo().kernelPlan, `xglm info`, bench output).
struct xglm_kernel_op {
    std::string node;    // e.g. "layer products, repacked Q4_0 (q4_0 files)"
    bool        ours;    // xglm-node's op, else ggml's node
    std::string detail;  // the kernel, or why ggml's
};
std::vector<xglm_kernel_op> xglm_kernel_plan_ops(const xglm_kernel_plan & plan);

// The plan for a ggml CPU variant whose code path is `isa`, narrowed by the environment:
//   XGLM_KERNELS=ggml        none of the ops (ggml's own nodes only); unset or "auto": all that run
//   XGLM_KERNELS=avx2        the ops in their AVX2 forms: no AVX-512 VNNI products (A/B runs)
//   XGLM_NO_CUSTOM_ATTN=1    no attention op
//   XGLM_NO_CUSTOM_GEMV=1    no decode-gemv op and no GELU op (it gates the fused GELU too)
// (a switch is on when set, non-empty and not "0"). false and *error for an XGLM_KERNELS value
// it does not know.
// `vnni`: whether that variant runs AVX-512 VNNI code (only with isa avx512).
bool xglm_kernel_plan_from_env(xglm_kernel_isa isa, bool vnni, xglm_kernel_plan * plan, std::string * error);

// Whether an environment switch such as XGLM_NO_CUSTOM_ATTN is on: set, non-empty and not "0".
bool xglm_env_flag(const char * name);

// "avx512", "avx2" or "none" (backendInfo().kernels).
const char * xglm_kernel_isa_name(xglm_kernel_isa isa);
