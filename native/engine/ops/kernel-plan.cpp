// The kernel plan; see kernel-plan.h.
#include "kernel-plan.h"

#include <cstdlib>
#include <cstring>

bool xglm_env_flag(const char * name) {
    const char * v = std::getenv(name);
    return v != nullptr && v[0] != '\0' && std::strcmp(v, "0") != 0;
}

bool xglm_kernel_plan_from_env(xglm_kernel_isa isa, bool vnni, xglm_kernel_plan * plan, std::string * error) {
    *plan     = xglm_kernel_plan{};
    plan->isa = isa;
    plan->log = std::getenv("XGLM_LOG") != nullptr;
    bool ours   = isa != xglm_kernel_isa::none;
    bool forced = false, avx2_only = false;  // XGLM_KERNELS=ggml, XGLM_KERNELS=avx2
    if (const char * k = std::getenv("XGLM_KERNELS"); k != nullptr && k[0] != '\0') {
        if (std::strcmp(k, "ggml") == 0) {
            ours = false, forced = true;
        } else if (std::strcmp(k, "avx2") == 0) {
            avx2_only = true;
        } else if (std::strcmp(k, "auto") != 0) {
            if (error) {
                *error = std::string("XGLM_KERNELS=") + k +
                         " is not known; use 'ggml' (ggml's own nodes only), 'avx2' (no AVX-512 VNNI products) or unset it";
            }
            return false;
        }
    }
    const bool gemv   = ours && !xglm_env_flag("XGLM_NO_CUSTOM_GEMV");
    plan->attention   = ours && !xglm_env_flag("XGLM_NO_CUSTOM_ATTN");
    plan->gemv_q4_0   = gemv;
    plan->gemv_q8_0   = gemv;
    plan->gemv_q6_k   = gemv;
    plan->vnni        = gemv && vnni && !avx2_only && isa == xglm_kernel_isa::avx512;
    plan->gemv_k   = plan->vnni;
    plan->gelu_bias   = gemv;
    const char * no_ops = forced ? "XGLM_KERNELS=ggml" : "the ggml CPU variant in use runs no AVX2 code";
    plan->attention_off = !ours ? no_ops : plan->attention ? "" : "XGLM_NO_CUSTOM_ATTN is set";
    plan->gemv_off      = !ours ? no_ops : gemv ? "" : "XGLM_NO_CUSTOM_GEMV is set";
    plan->vnni_off      = !gemv                           ? plan->gemv_off
                          : plan->vnni                    ? ""
                          : isa != xglm_kernel_isa::avx512 ? "the ggml CPU variant in use runs no AVX-512 code"
                          : !vnni                          ? "the ggml CPU variant in use runs no AVX-512 VNNI code"
                                                           : "XGLM_KERNELS=avx2";
    return true;
}

std::vector<xglm_kernel_op> xglm_kernel_plan_ops(const xglm_kernel_plan & p) {
    // the products' form, and on an AVX-512 variant why not the VNNI one
    const std::string form = p.vnni ? "AVX-512 VNNI" : p.isa == xglm_kernel_isa::avx512 ? "AVX2 (not VNNI: " + p.vnni_off + ")" : "AVX2";
    auto ggml = [](const char * node, const std::string & why) { return "ggml " + std::string(node) + (why.empty() ? "" : " (" + why + ")"); };
    std::vector<xglm_kernel_op> ops;
    ops.push_back({"layer products, repacked Q4_0 (q4_0 files), any token count", p.gemv_q4_0,
                   p.gemv_q4_0 ? "decode-gemv, " + form + ", with the layer norm, bias, GELU and residual folded in"
                               : ggml("mul_mat (repacked gemm/gemv)", p.gemv_off)});
    if (p.gemv_q8_0 && p.vnni) {
        ops.push_back({"layer products, Q8_0 (q8_0 files), any token count", true,
                       "decode-gemv, AVX-512 VNNI, over the weights rearranged into 8-row groups at load (a model loaded with "
                       "repack off: AVX2, up to 8 tokens), with the layer norm, bias, GELU and residual folded in"});
    } else {
        ops.push_back({"layer products, Q8_0 (q8_0 files), up to 8 tokens (decode)", p.gemv_q8_0,
                       p.gemv_q8_0 ? "decode-gemv, AVX2, with the layer norm, bias, GELU and residual folded in"
                                   : ggml("mul_mat", p.gemv_off)});
    }
    ops.push_back({"layer products, Q4_K (repacked by ggml), Q5_K, Q6_K (q4_k_m files), any token count", p.gemv_k,
                   p.gemv_k ? "decode-gemv, AVX-512 VNNI, with the layer norm, bias, GELU and residual folded in"
                            : ggml("mul_mat", p.vnni_off.empty() ? p.gemv_off : p.vnni_off)});
    ops.push_back({"logits rows, Q8_0 output matrix, up to 8 rows", p.gemv_q8_0,
                   p.gemv_q8_0 ? "decode-gemv, AVX2, final norm folded in" : ggml("mul_mat", p.gemv_off)});
    ops.push_back({"logits rows, Q6_K output matrix (q4_0, q4_k_m files)", p.gemv_q6_k,
                   p.gemv_q6_k ? "decode-gemv, " + form + ", final norm folded in"
                               : ggml("mul_mat", p.gemv_off)});
    ops.push_back({"attention, F16 cache, ubatches under 64 tokens", p.attention,
                   p.attention ? "attention op (AVX2 + FMA + F16C code): F32 scores over the visible cells" : ggml("flash_attn_ext", p.attention_off)});
    ops.push_back({"feed-forward bias + GELU, other quantized layers", p.gelu_bias,
                   p.gelu_bias ? "gelu op on all threads (AVX2 code)" : ggml("add + gelu_erf", p.gemv_off)});
    ops.push_back({"attention from 64 tokens, F32 or Q8_0 caches", false, "ggml flash_attn_ext"});
    ops.push_back({p.gemv_q8_0 && p.vnni ? "other products (F32, F16 layers)"
                                         : "other products (F32, F16, Q4_K, Q5_K, Q6_K layers; Q8_0 from 9 tokens)",
                   false, "ggml mul_mat (its CPU variant's kernels)"});
    return ops;
}

const char * xglm_kernel_isa_name(xglm_kernel_isa isa) {
    switch (isa) {
        case xglm_kernel_isa::avx512: return "avx512";
        case xglm_kernel_isa::avx2: return "avx2";
        default: return "none";
    }
}
