// backendInfo(): which ggml CPU code runs, for `xglm info` and diagnostics.
#include "addon.h"
#include "ggml.h"
#include "xglm.h"

namespace {

Napi::Value backend_info(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    const xglm_backend_info * b = xglm_backend_init(nullptr);
    Napi::Object out = Napi::Object::New(env);
    out.Set("variant", b->variant);
    out.Set("dynamic", b->dynamic);
    Napi::Array features = Napi::Array::New(env, b->features.size());
    for (size_t i = 0; i < b->features.size(); ++i) {
        features.Set(static_cast<uint32_t>(i), b->features[i]);
    }
    out.Set("features", features);
    Napi::Array available = Napi::Array::New(env, b->available.size());
    for (size_t i = 0; i < b->available.size(); ++i) {
        available.Set(static_cast<uint32_t>(i), b->available[i]);
    }
    out.Set("available", available);
    out.Set("kernels", b->kernels);
    xglm_kernel_plan_info plan{};
    std::string           error;
    Napi::Object          kp = Napi::Object::New(env);
    // an unknown XGLM_KERNELS value: said here, and an error when a context is created
    if (!xglm_kernel_plan_now(&plan, &error)) kp.Set("error", error);
    Napi::Array ops = Napi::Array::New(env, plan.ops.size());
    for (size_t i = 0; i < plan.ops.size(); ++i) {
        Napi::Object o = Napi::Object::New(env);
        o.Set("node", plan.ops[i].node);
        o.Set("impl", plan.ops[i].ours ? "xglm" : "ggml");
        o.Set("detail", plan.ops[i].detail);
        ops.Set(static_cast<uint32_t>(i), o);
    }
    kp.Set("isa", plan.isa.empty() ? b->kernels : plan.isa);
    kp.Set("vnni", plan.vnni);
    kp.Set("ops", ops);
    out.Set("kernelPlan", kp);
    out.Set("ggmlVersion", ggml_version());
#ifdef XGLM_COMPILER
    out.Set("compiler", XGLM_COMPILER);
#endif
    return out;
}

}  // namespace

void init_backend_info(Napi::Env env, Napi::Object exports) {
    exports.Set("backendInfo", Napi::Function::New(env, backend_info, "backendInfo"));
}
