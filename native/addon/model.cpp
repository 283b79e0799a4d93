// Model: a loaded XGLM GGUF file, shared read-only by its contexts.
//
// JS sees:
//   Model.load(path, { useRepack }, onProgress?) -> Promise<Model>   (the file is mapped off-thread)
//   model.hparams -> { nVocab, nCtxTrain, nEmbd, nFf, nLayer, nHead, normEps, embdScale, fileType, name }
//   model.tensors() -> [{ name, type, buffer, shape }]
//   model.mappedBytes, model.ownedBytes
//   model.dispose()   contexts made from it keep the weights alive until they are disposed
#include "model.h"

#include "addon.h"

namespace {

Napi::Error load_error(Napi::Env env, const std::string & message) {
    Napi::Error err = Napi::Error::New(env, "xglm: " + message);
    err.Set("code", Napi::String::New(env, "ERR_XGLM_MODEL_LOAD"));
    return err;
}

// Maps the file on a libuv thread: loading is I/O, short and one-off (contexts, which
// compute for long, have their own thread instead).
class LoadWorker : public Napi::AsyncProgressQueueWorker<float> {
  public:
    LoadWorker(Napi::Env env, std::string path, xglm_model_params params, Napi::Function on_progress) :
        Napi::AsyncProgressQueueWorker<float>(env, "xglm.Model.load"),
        deferred_(Napi::Promise::Deferred::New(env)),
        path_(std::move(path)),
        params_(std::move(params)) {
        if (!on_progress.IsEmpty()) progress_ = Napi::Persistent(on_progress);
    }

    ~LoadWorker() override { xglm_model_free(model_); }

    Napi::Promise promise() const { return deferred_.Promise(); }

  protected:
    void Execute(const ExecutionProgress & progress) override {
        params_.progress = [&progress](float f) {
            progress.Send(&f, 1);
            return true;
        };
        model_ = xglm_model_load(path_, params_, &error_);
    }

    void OnProgress(const float * data, size_t count) override {
        if (progress_.IsEmpty() || count == 0) return;
        Napi::HandleScope scope(Env());
        progress_.Value().Call({Napi::Number::New(Env(), data[count - 1])});
    }

    void OnOK() override {
        Napi::Env env = Env();
        if (model_ == nullptr) {
            deferred_.Reject(load_error(env, error_).Value());
            return;
        }
        Napi::Object obj = addon_data(env).model_constructor.New({});
        Model::Unwrap(obj)->set(std::shared_ptr<xglm_model>(model_, xglm_model_free));
        model_ = nullptr;
        deferred_.Resolve(obj);
    }

    void OnError(const Napi::Error & e) override { deferred_.Reject(e.Value()); }

  private:
    Napi::Promise::Deferred deferred_;
    Napi::FunctionReference progress_;
    std::string             path_;
    xglm_model_params       params_;
    xglm_model *            model_ = nullptr;
    std::string             error_;
};

}  // namespace

Napi::Function Model::define(Napi::Env env) {
    return DefineClass(env, "Model",
                       {
                           StaticMethod<&Model::load>("load"),
                           InstanceAccessor<&Model::hparams>("hparams"),
                           InstanceAccessor<&Model::mapped_bytes>("mappedBytes"),
                           InstanceAccessor<&Model::owned_bytes>("ownedBytes"),
                           InstanceMethod<&Model::tensors>("tensors"),
                           InstanceMethod<&Model::dispose>("dispose"),
                       });
}

Model::Model(const Napi::CallbackInfo & info) : Napi::ObjectWrap<Model>(info) {}

std::shared_ptr<const xglm_model> Model::get(Napi::Env env) const {
    if (!model_) {
        Napi::Error err = Napi::Error::New(env, "xglm: the model was disposed");
        err.Set("code", Napi::String::New(env, "ERR_XGLM_DISPOSED"));
        throw err;
    }
    return model_;
}

Napi::Value Model::load(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (!info[0].IsString()) throw Napi::TypeError::New(env, "xglm: Model.load(path): path must be a string");
    xglm_model_params params;
    if (info[1].IsObject()) {
        Napi::Object o = info[1].As<Napi::Object>();
        if (o.Has("useRepack")) params.use_repack = o.Get("useRepack").ToBoolean();
    }
    Napi::Function on_progress = info[2].IsFunction() ? info[2].As<Napi::Function>() : Napi::Function();
    auto * worker = new LoadWorker(env, info[0].As<Napi::String>(), params, on_progress);
    Napi::Promise promise = worker->promise();
    worker->Queue();
    return promise;
}

Napi::Value Model::hparams(const Napi::CallbackInfo & info) {
    Napi::Env            env = info.Env();
    const xglm_hparams & hp  = xglm_model_hparams(get(env).get());
    Napi::Object         o   = Napi::Object::New(env);
    o.Set("nVocab", hp.n_vocab);
    o.Set("nCtxTrain", hp.n_ctx_train);
    o.Set("nEmbd", hp.n_embd);
    o.Set("nFf", hp.n_ff);
    o.Set("nLayer", hp.n_layer);
    o.Set("nHead", hp.n_head);
    o.Set("normEps", hp.norm_eps);
    o.Set("embdScale", hp.embd_scale);
    o.Set("fileType", hp.file_type);
    o.Set("name", hp.name);
    return o;
}

Napi::Value Model::tensors(const Napi::CallbackInfo & info) {
    Napi::Env  env  = info.Env();
    const auto list = xglm_model_tensors(get(env).get());
    Napi::Array out = Napi::Array::New(env, list.size());
    for (size_t i = 0; i < list.size(); ++i) {
        Napi::Object o = Napi::Object::New(env);
        o.Set("name", list[i].name);
        o.Set("type", list[i].type);
        o.Set("buffer", list[i].buffer);
        Napi::Array shape = Napi::Array::New(env);
        for (int d = 0; d < 4 && (d == 0 || list[i].ne[d] > 1); ++d) shape.Set(d, static_cast<double>(list[i].ne[d]));
        o.Set("shape", shape);
        out.Set(i, o);
    }
    return out;
}

Napi::Value Model::mapped_bytes(const Napi::CallbackInfo & info) {
    return Napi::Number::New(info.Env(), static_cast<double>(xglm_model_mapped_bytes(get(info.Env()).get())));
}

Napi::Value Model::owned_bytes(const Napi::CallbackInfo & info) {
    return Napi::Number::New(info.Env(), static_cast<double>(xglm_model_owned_bytes(get(info.Env()).get())));
}

Napi::Value Model::dispose(const Napi::CallbackInfo & info) {
    model_.reset();
    return info.Env().Undefined();
}

void init_model(Napi::Env env, Napi::Object exports) {
    Napi::Function ctor                    = Model::define(env);
    addon_data(env).model_constructor      = Napi::Persistent(ctor);
    exports.Set("Model", ctor);
}
