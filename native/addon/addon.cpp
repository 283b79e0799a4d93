// Registers the addon's classes and functions; nothing else.
#include "addon.h"

#include "xglm.h"

namespace {

Napi::Object init(Napi::Env env, Napi::Object exports) {
    env.SetInstanceData(new AddonData());
    std::string error;
    if (xglm_backend_init(&error) == nullptr) {
        Napi::Error err = Napi::Error::New(env, "xglm: " + error);
        err.Set("code", Napi::String::New(env, "ERR_XGLM_BACKEND"));
        throw err;
    }
    init_backend_info(env, exports);
    init_quantize(env, exports);
    init_model(env, exports);
    init_context(env, exports);
    return exports;
}

}  // namespace

NODE_API_MODULE(xglm, init)
