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
    out.Set("ggmlVersion", ggml_version());
    return out;
}

}  // namespace

void init_backend_info(Napi::Env env, Napi::Object exports) {
    exports.Set("backendInfo", Napi::Function::New(env, backend_info, "backendInfo"));
}
