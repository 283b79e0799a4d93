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
    bool ours = isa != xglm_kernel_isa::none;
    if (const char * k = std::getenv("XGLM_KERNELS"); k != nullptr && k[0] != '\0') {
        if (std::strcmp(k, "ggml") == 0) {
            ours = false;
        } else if (std::strcmp(k, "avx2") == 0) {
            vnni = false;
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
    plan->gemv_q6_k   = gemv;
    plan->vnni        = gemv && vnni && isa == xglm_kernel_isa::avx512;
    plan->gelu_bias   = gemv;
    return true;
}

const char * xglm_kernel_isa_name(xglm_kernel_isa isa) {
    switch (isa) {
        case xglm_kernel_isa::avx512: return "avx512";
        case xglm_kernel_isa::avx2: return "avx2";
        default: return "none";
    }
}
