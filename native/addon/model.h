// Model: the N-API class that owns a loaded xglm_model (see model.cpp for what JS sees).
#pragma once

#include <napi.h>

#include <memory>

#include "xglm.h"

class Model : public Napi::ObjectWrap<Model> {
  public:
    static Napi::Function define(Napi::Env env);
    explicit Model(const Napi::CallbackInfo & info);

    // The weights; throws ERR_XGLM_DISPOSED after dispose().
    std::shared_ptr<const xglm_model> get(Napi::Env env) const;
    void set(std::shared_ptr<const xglm_model> model) { model_ = std::move(model); }

  private:
    static Napi::Value load(const Napi::CallbackInfo & info);
    Napi::Value        hparams(const Napi::CallbackInfo & info);
    Napi::Value        tensors(const Napi::CallbackInfo & info);
    Napi::Value        mapped_bytes(const Napi::CallbackInfo & info);
    Napi::Value        owned_bytes(const Napi::CallbackInfo & info);
    Napi::Value        dispose(const Napi::CallbackInfo & info);

    std::shared_ptr<const xglm_model> model_;
};
