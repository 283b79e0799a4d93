// Per-environment state of the addon. Node may load it in the main thread and in several
// worker_threads at once: nothing here is process-global (see backend.h for what is).
#pragma once

#include <napi.h>

struct AddonData {
    Napi::FunctionReference model_constructor;
    Napi::FunctionReference context_constructor;
};

inline AddonData & addon_data(Napi::Env env) {
    return *env.GetInstanceData<AddonData>();
}

// Each file registers what it exposes.
void init_backend_info(Napi::Env env, Napi::Object exports);
void init_quantize(Napi::Env env, Napi::Object exports);
void init_model(Napi::Env env, Napi::Object exports);
void init_context(Napi::Env env, Napi::Object exports);
