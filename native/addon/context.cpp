// Context: one xglm_context and the native thread that runs all of its work.
//
// JS sees (every method but abort() returns a Promise; work runs in call order):
//   Context.create(model, { contextSize, batchSize, outputsPerBatch, threads, kvType, keepActivations })
//                                                   -> Promise<Context>
//   ctx.info -> { contextSize, threads, computeMs }
//   ctx.evaluate(tokens: Int32Array, positions: Int32Array, seqIds: Int32Array, wantLogits: Uint8Array)
//   ctx.sample(batchIndex, params) -> token id (-1 if every token is banned)
//   ctx.generate(prompt: Int32Array, params, { position, seqId, seed, firstStep, maxSteps,
//                positionLimit, eosToken, penaltyWindow, reserve, waitForCells, streamId },
//                onToken(token, computeMs) -> stop?)
//       -> { steps, endPosition }
//       a stream of the context's scheduler (the engine's xglm_scheduler): its prompt (at
//       position - prompt.length …) is evaluated in chunks, then each step draws, streams the
//       token, and evaluates it in one batch with every other running stream's token, until
//       </s>, maxSteps, positionLimit, or onToken returning true (checked before each
//       evaluation; a stream runs at most 2 evaluations ahead of onToken, so a token or two
//       past the stop may have been evaluated: endPosition says). Streams on different
//       sequences run concurrently (the promise settles when its stream ends; other work
//       runs between steps); `reserve` KV cells are held for its generated tokens; when they
//       do not fit it fails with ERR_XGLM_CONTEXT_OVERFLOW, or with waitForCells waits for
//       running streams to end.
//   ctx.stopStream(streamId)  ends that stream before its next evaluation (the others run on)
//   ctx.logprobs(batchIndices: Int32Array, targets: Int32Array, topK)
//       -> { logprobs: Float32Array, topIds: Int32Array, topLogprobs: Float32Array }
//   ctx.getLogits(batchIndex) -> Float32Array      (a copy; for tests and tools)
//   ctx.getActivation(name) -> Float32Array | null (with keepActivations)
//   ctx.kvClear(), ctx.kvRemove(seq, p0, p1), ctx.kvCopy(src, dst, p0, p1), ctx.kvSeqPosMax(seq)
//   ctx.abort()      stops the running evaluation, every stream, and every call queued before this one
//   ctx.dispose()    aborts, rejects queued work with ERR_XGLM_DISPOSED, frees the cache
//
// Threads: compute runs on one std::thread per context (never the JS thread, never libuv's
// pool, which file and network callbacks need). Inputs are copied into plain structs on the
// JS thread; results come back through a ThreadSafeFunction and become JS-owned typed arrays
// (Electron forbids external buffers). While work is pending the wrapper holds a reference
// to itself, so it cannot be collected mid-flight; the model's weights are shared_ptr-owned.
#include <napi.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <algorithm>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include "addon.h"
#include "model.h"
#include "xglm.h"

namespace {

// The outcome of a job, read on the JS thread to settle its promise.
struct job_result {
    const char * code = nullptr;  // error code, or nullptr on success
    std::string  message;
    std::function<Napi::Value(Napi::Env)> value;  // builds the resolution value (JS thread)
};

enum class job_kind { create, work, stop };

struct job;

// The tokens a running generate() job streams to its JS callback.
struct token_stream {
    Napi::FunctionReference callback;      // JS thread only
    Napi::FunctionReference progress;      // JS thread only; may be empty
    std::atomic<bool>       stop{false};   // the callback asked to stop
    job *                   owner = nullptr;
    // Tokens the callback has seen. The loop stays at most LOOKAHEAD evaluations ahead of it:
    // a large model never waits (JS is far faster than a token), a tiny one does not run far
    // past a stop that JS has not seen yet.
    static constexpr int64_t LOOKAHEAD = 2;
    std::mutex              mutex;
    int64_t                 seen = 0;
};

struct job {
    Napi::Promise::Deferred deferred;
    job_kind                kind;
    uint64_t                abort_epoch;  // aborts requested before it was queued
    std::function<job_result(xglm_context *&)> run;  // on the context thread
    job_result              result;
    std::shared_ptr<token_stream> stream;  // generate() only
    // generate() only: the scheduler's stream
    std::unique_ptr<xglm_stream_params> stream_params;
    bool                    wait_for_cells = false;
    double                  stream_key     = -1;  // the JS streamId (stopStream)
    int64_t                 stream_id      = -1;  // the scheduler's, once admitted
    int64_t                 posted         = 0;   // tokens handed to the JS thread
};

// What the context thread hands to the JS thread: a finished job, or one streamed token of it.
struct message {
    job *   j;
    bool    is_token   = false;
    int32_t token      = 0;
    double  compute_ms = 0;
    bool    is_progress = false;  // token = prompt tokens evaluated
};

Napi::Error coded_error(Napi::Env env, const char * code, const std::string & message) {
    Napi::Error err = Napi::Error::New(env, "xglm: " + message);
    err.Set("code", Napi::String::New(env, code));
    return err;
}

job_result ok(std::function<Napi::Value(Napi::Env)> value = nullptr) {
    job_result r;
    r.value = std::move(value);
    return r;
}

job_result error(const char * code, std::string message) {
    job_result r;
    r.code    = code;
    r.message = std::move(message);
    return r;
}

template <typename T, typename A> std::vector<T> copy_array(Napi::Env env, const Napi::Value & v, napi_typedarray_type type,
                                                            const char * what) {
    if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != type) {
        throw Napi::TypeError::New(env, std::string("xglm: ") + what + " has the wrong typed-array type");
    }
    A a = v.As<A>();
    return std::vector<T>(a.Data(), a.Data() + a.ElementLength());
}

int32_t int_arg(const Napi::CallbackInfo & info, size_t i, const char * what) {
    if (!info[i].IsNumber()) throw Napi::TypeError::New(info.Env(), std::string("xglm: ") + what + " must be a number");
    return info[i].As<Napi::Number>().Int32Value();
}

float float_opt(const Napi::Object & o, const char * key, float fallback) {
    Napi::Value v = o.Get(key);
    return v.IsNumber() ? v.As<Napi::Number>().FloatValue() : fallback;
}

ggml_type kv_type(Napi::Env env, const Napi::Value & v) {
    if (v.IsUndefined()) return GGML_TYPE_F16;
    const std::string s = v.ToString();
    if (s == "f16") return GGML_TYPE_F16;
    if (s == "f32") return GGML_TYPE_F32;
    if (s == "q8_0") return GGML_TYPE_Q8_0;
    throw Napi::RangeError::New(env, "xglm: kvType must be 'f16', 'f32' or 'q8_0'");
}

// Sampling parameters of sample() and generate(); `seed` is read by the callers.
xglm_sampler_params sampler_params(Napi::Env env, const Napi::Object & o) {
    xglm_sampler_params p;
    p.temperature       = float_opt(o, "temperature", p.temperature);
    p.top_k             = static_cast<int32_t>(float_opt(o, "topK", 0));
    p.top_p             = float_opt(o, "topP", p.top_p);
    p.min_p             = float_opt(o, "minP", p.min_p);
    p.typical_p         = float_opt(o, "typicalP", p.typical_p);
    p.repeat_penalty    = float_opt(o, "repeatPenalty", p.repeat_penalty);
    p.presence_penalty  = float_opt(o, "presencePenalty", p.presence_penalty);
    p.frequency_penalty = float_opt(o, "frequencyPenalty", p.frequency_penalty);
    if (o.Has("penaltyTokens")) {
        p.penalty_tokens = copy_array<int32_t, Napi::Int32Array>(env, o.Get("penaltyTokens"), napi_int32_array, "penaltyTokens");
    }
    if (o.Has("logitBiasIds")) {
        auto ids    = copy_array<int32_t, Napi::Int32Array>(env, o.Get("logitBiasIds"), napi_int32_array, "logitBiasIds");
        auto values = copy_array<float, Napi::Float32Array>(env, o.Get("logitBiasValues"), napi_float32_array, "logitBiasValues");
        if (ids.size() != values.size()) throw Napi::RangeError::New(env, "xglm: logitBiasIds and logitBiasValues differ in length");
        for (size_t i = 0; i < ids.size(); ++i) p.logit_bias.emplace_back(ids[i], values[i]);
    }
    return p;
}

job_result decode_result(xglm_status st, std::string err) {
    switch (st) {
        case XGLM_OK: return ok();
        case XGLM_ABORTED: return error("ERR_XGLM_ABORTED", std::move(err));
        case XGLM_ERR_INPUT: return error("ERR_XGLM_INVALID_ARGUMENT", std::move(err));
        case XGLM_ERR_KV_FULL: return error("ERR_XGLM_CONTEXT_OVERFLOW", std::move(err));
        default: return error("ERR_XGLM_COMPUTE", std::move(err));
    }
}

// sample(), logprobs() and getLogits() on a batch index without logits.
job_result no_logits(int32_t row) {
    return error("ERR_XGLM_INVALID_ARGUMENT", "batch token " + std::to_string(row) + " has no logits; evaluate it with wantLogits set");
}

Napi::Float32Array float_array(Napi::Env env, const float * data, size_t n) {
    Napi::Float32Array a = Napi::Float32Array::New(env, n);
    if (n) std::memcpy(a.Data(), data, n * sizeof(float));
    return a;
}

class Context;

// The contexts whose threads run, for the process-exit guard (stop_all_at_exit). Allocated once
// and never destroyed, so an atexit handler can use them after other statics are gone.
std::mutex &          live_mutex() { static auto * m = new std::mutex; return *m; }
std::set<Context *> & live_contexts() { static auto * s = new std::set<Context *>; return *s; }

class Context : public Napi::ObjectWrap<Context> {
  public:
    static Napi::Function define(Napi::Env env) {
        return DefineClass(env, "Context",
                           {
                               StaticMethod<&Context::create>("create"),
                               InstanceAccessor<&Context::info>("info"),
                               InstanceMethod<&Context::evaluate>("evaluate"),
                               InstanceMethod<&Context::sample>("sample"),
                               InstanceMethod<&Context::generate>("generate"),
                               InstanceMethod<&Context::logprobs>("logprobs"),
                               InstanceMethod<&Context::get_logits>("getLogits"),
                               InstanceMethod<&Context::get_activation>("getActivation"),
                               InstanceMethod<&Context::kv_clear>("kvClear"),
                               InstanceMethod<&Context::kv_remove>("kvRemove"),
                               InstanceMethod<&Context::kv_copy>("kvCopy"),
                               InstanceMethod<&Context::kv_seq_pos_max>("kvSeqPosMax"),
                               InstanceMethod<&Context::abort>("abort"),
                               InstanceMethod<&Context::stop_stream>("stopStream"),
                               InstanceMethod<&Context::dispose>("dispose"),
                           });
    }

    explicit Context(const Napi::CallbackInfo & info) : Napi::ObjectWrap<Context>(info) {
        Napi::Env env = info.Env();
        tsfn_ = tsfn_t::New(env, "xglm.Context", 0, 1, this);
        tsfn_.Unref(env);
        // registered after the TSFN's own hook, so it runs first at env teardown
        cleanup_ = env.AddCleanupHook(&Context::on_env_cleanup, this);
        thread_  = std::thread([this] {
            loop();
            std::lock_guard<std::mutex> lock(mutex_);
            loop_done_ = true;
            loop_done_cv_.notify_all();
        });
        std::lock_guard<std::mutex> lock(live_mutex());
        live_contexts().insert(this);
    }

    ~Context() override {
        if (!released_) cleanup_.Remove(Env());
        shutdown();
    }

    // process.exit() runs no env cleanup hook: Node tears the env down and calls std::exit,
    // whose static destructors (ggml's, the C++ runtime's) would run while this thread posts
    // to a dying thread-safe function or ggml's workers compute — a crash at exit, now and then.
    // Called at process 'exit' (stopForExit) and, as a fallback, from an atexit handler: aborts
    // the running graph and lets the loop return, waiting at most 2 s. Nothing here touches JS
    // or frees what a finalizer would; the process is ending.
    void stop_for_exit() {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            if (shut_down_) return;
            shut_down_ = true;
            ++abort_epoch_;
            if (ctx_) xglm_context_set_abort(ctx_, true);
        }
        cv_.notify_one();
        std::unique_lock<std::mutex> lock(mutex_);
        const bool done = loop_done_cv_.wait_for(lock, std::chrono::seconds(2), [this] { return loop_done_; });
        lock.unlock();
        if (!thread_.joinable()) return;  // a disposed context's thread ended and was joined
        if (done) {
            thread_.join();
        } else {
            thread_.detach();
        }
    }

  private:
    static void on_env_cleanup(Context * self) { self->shutdown(); }

    // ---- JS thread ------------------------------------------------------------------

    static Napi::Value create(const Napi::CallbackInfo & info) {
        Napi::Env env = info.Env();
        if (!info[0].IsObject() || !info[0].As<Napi::Object>().InstanceOf(addon_data(env).model_constructor.Value())) {
            throw Napi::TypeError::New(env, "xglm: Context.create(model, options): model must be a Model");
        }
        std::shared_ptr<const xglm_model> model = Model::Unwrap(info[0].As<Napi::Object>())->get(env);
        xglm_context_params               p;
        if (info[1].IsObject()) {
            Napi::Object o = info[1].As<Napi::Object>();
            auto         u = [&](const char * key, uint32_t fallback) {
                Napi::Value v = o.Get(key);
                return v.IsNumber() ? v.As<Napi::Number>().Uint32Value() : fallback;
            };
            p.n_ctx            = u("contextSize", p.n_ctx);
            p.n_ubatch         = u("batchSize", p.n_ubatch);
            p.n_outputs        = u("outputsPerBatch", p.n_outputs);
            p.n_threads        = static_cast<int32_t>(u("threads", 0));
            p.type_kv          = kv_type(env, o.Get("kvType"));
            p.keep_activations = o.Get("keepActivations").ToBoolean();
        }
        Napi::Object obj  = addon_data(env).context_constructor.New({});
        Context *    self = Context::Unwrap(obj);
        return self->enqueue(env, job_kind::create, [self, model, p](xglm_context *& ctx) -> job_result {
            std::string err;
            ctx = xglm_context_new(model, p, &err);
            if (!ctx) return error("ERR_XGLM_INVALID_ARGUMENT", err);
            self->n_vocab_   = xglm_model_hparams(xglm_context_model(ctx)).n_vocab;
            self->n_ctx_     = xglm_n_ctx(ctx);
            self->n_threads_ = xglm_n_threads(ctx);
            // the wrapper is referenced while the job is pending, so Value() is alive
            return ok([self](Napi::Env) -> Napi::Value { return self->Value(); });
        });
    }

    Napi::Value info(const Napi::CallbackInfo & info) {
        Napi::Object o = Napi::Object::New(info.Env());
        o.Set("contextSize", static_cast<double>(n_ctx_.load()));
        o.Set("threads", n_threads_.load());
        o.Set("computeMs", static_cast<double>(compute_ns_.load()) / 1e6);
        return o;
    }

    Napi::Value evaluate(const Napi::CallbackInfo & info) {
        Napi::Env  env = info.Env();
        xglm_batch b;
        b.tokens      = copy_array<int32_t, Napi::Int32Array>(env, info[0], napi_int32_array, "tokens");
        b.pos         = copy_array<int32_t, Napi::Int32Array>(env, info[1], napi_int32_array, "positions");
        b.seq         = copy_array<int32_t, Napi::Int32Array>(env, info[2], napi_int32_array, "seqIds");
        b.want_logits = copy_array<uint8_t, Napi::Uint8Array>(env, info[3], napi_uint8_array, "wantLogits");
        // the wrapper is referenced while the job is pending, so `this` outlives it
        return enqueue(env, job_kind::work, [this, b = std::move(b)](xglm_context *& ctx) -> job_result {
            std::string       err;
            const xglm_status st = xglm_decode(ctx, b, &err);
            compute_ns_.store(xglm_compute_ns(ctx));
            return decode_result(st, std::move(err));
        });
    }

    Napi::Value sample(const Napi::CallbackInfo & info) {
        Napi::Env     env = info.Env();
        const int32_t row = int_arg(info, 0, "batchIndex");
        if (!info[1].IsObject()) throw Napi::TypeError::New(env, "xglm: sample(batchIndex, params): params must be an object");
        Napi::Object        o = info[1].As<Napi::Object>();
        xglm_sampler_params p = sampler_params(env, o);
        const bool     reseed = o.Get("seed").IsNumber();
        const uint64_t seed   = reseed ? static_cast<uint64_t>(o.Get("seed").As<Napi::Number>().Int64Value()) : 0;
        return enqueue(env, job_kind::work, [this, row, p = std::move(p), reseed, seed](xglm_context *& ctx) -> job_result {
            const float * logits = xglm_get_logits(ctx, row);
            if (!logits) return no_logits(row);
            if (reseed) rng_.seed(seed);
            const int32_t id = xglm_sample(logits, n_vocab_, p, rng_);
            return ok([id](Napi::Env env) -> Napi::Value { return Napi::Number::New(env, id); });
        });
    }

    // A stream of the context's scheduler (see the top of the file).
    Napi::Value generate(const Napi::CallbackInfo & info) {
        Napi::Env env = info.Env();
        if (!info[1].IsObject() || !info[2].IsObject() || !info[3].IsFunction()) {
            throw Napi::TypeError::New(env, "xglm: generate(prompt, params, options, onToken): wrong argument types");
        }
        auto sp    = std::make_unique<xglm_stream_params>();
        sp->prompt = copy_array<int32_t, Napi::Int32Array>(env, info[0], napi_int32_array, "prompt");
        if (sp->prompt.empty()) throw Napi::RangeError::New(env, "xglm: generate: the prompt must hold at least one token");
        xglm_sampler_params p = sampler_params(env, info[1].As<Napi::Object>());
        Napi::Object        o = info[2].As<Napi::Object>();
        auto num = [&](const char * key) -> double {
            Napi::Value v = o.Get(key);
            if (!v.IsNumber()) throw Napi::TypeError::New(env, std::string("xglm: generate: options.") + key + " must be a number");
            return v.As<Napi::Number>().DoubleValue();
        };
        xglm_generation_params & g = sp->gen;
        g.sampler        = std::move(p);
        g.position       = static_cast<int32_t>(num("position"));
        g.seq            = static_cast<int32_t>(num("seqId"));
        g.seed           = static_cast<uint64_t>(num("seed"));
        g.first_step     = static_cast<uint64_t>(num("firstStep"));
        g.max_steps      = static_cast<int64_t>(num("maxSteps"));
        g.position_limit = static_cast<int32_t>(num("positionLimit"));
        g.eos_token      = static_cast<int32_t>(num("eosToken"));  // -1: none
        g.penalty_window = static_cast<size_t>(num("penaltyWindow"));
        sp->reserve      = static_cast<int32_t>(num("reserve"));
        const double key = num("streamId");
        auto stream      = std::make_shared<token_stream>();
        stream->callback = Napi::Persistent(info[3].As<Napi::Function>());
        if (info[4].IsFunction()) stream->progress = Napi::Persistent(info[4].As<Napi::Function>());
        streams_by_key_[key] = stream;
        const bool wait = o.Get("waitForCells").ToBoolean();
        return enqueue(env, job_kind::work, nullptr, stream, [&](job * j) {
            j->stream_params  = std::move(sp);
            j->wait_for_cells = wait;
            j->stream_params->strict = wait;
            j->stream_key     = key;
        });
    }

    Napi::Value stop_stream(const Napi::CallbackInfo & info) {
        if (!info[0].IsNumber()) throw Napi::TypeError::New(info.Env(), "xglm: stopStream(streamId): streamId must be a number");
        auto it = streams_by_key_.find(info[0].As<Napi::Number>().DoubleValue());
        if (it != streams_by_key_.end()) {
            if (auto s = it->second.lock()) s->stop.store(true);
        }
        cv_.notify_one();
        return info.Env().Undefined();
    }

    // Context thread: hands one generated token to the JS thread.
    void post_token(token_stream & s, int32_t token) {
        auto * m = new message{s.owner, true, token, static_cast<double>(compute_ns_.load()) / 1e6};
        if (tsfn_.NonBlockingCall(m) != napi_ok) delete m;
    }

    Napi::Value logprobs(const Napi::CallbackInfo & info) {
        Napi::Env env     = info.Env();
        auto      rows    = copy_array<int32_t, Napi::Int32Array>(env, info[0], napi_int32_array, "batchIndices");
        auto      targets = copy_array<int32_t, Napi::Int32Array>(env, info[1], napi_int32_array, "targets");
        const int32_t top_k = int_arg(info, 2, "topK");
        if (targets.size() != rows.size()) throw Napi::RangeError::New(env, "xglm: logprobs: targets must have one entry per row");
        if (top_k < 0) throw Napi::RangeError::New(env, "xglm: logprobs: topK must be >= 0");
        return enqueue(env, job_kind::work, [this, rows = std::move(rows), targets = std::move(targets), top_k](xglm_context *& ctx) -> job_result {
            const size_t n = rows.size();
            const int32_t k = std::min(top_k, n_vocab_);
            auto lp   = std::make_shared<std::vector<float>>(n, 0.0f);
            auto tids = std::make_shared<std::vector<int32_t>>(n * k);
            auto tlps = std::make_shared<std::vector<float>>(n * k);
            std::vector<int32_t> ids;
            std::vector<float>   lps;
            for (size_t i = 0; i < n; ++i) {
                const float * logits = xglm_get_logits(ctx, rows[i]);
                if (!logits) return no_logits(rows[i]);
                if (targets[i] >= n_vocab_) return error("ERR_XGLM_INVALID_ARGUMENT", "target token " + std::to_string(targets[i]) + " is outside the vocabulary");
                (*lp)[i] = targets[i] < 0 ? NAN : static_cast<float>(xglm_log_softmax_at(logits, n_vocab_, targets[i]));
                if (k > 0) {
                    xglm_top_k(logits, n_vocab_, k, &ids, &lps);
                    std::copy(ids.begin(), ids.end(), tids->begin() + i * k);
                    std::copy(lps.begin(), lps.end(), tlps->begin() + i * k);
                }
            }
            return ok([lp, tids, tlps](Napi::Env env) -> Napi::Value {
                Napi::Object o = Napi::Object::New(env);
                o.Set("logprobs", float_array(env, lp->data(), lp->size()));
                Napi::Int32Array ti = Napi::Int32Array::New(env, tids->size());
                if (!tids->empty()) std::memcpy(ti.Data(), tids->data(), tids->size() * sizeof(int32_t));
                o.Set("topIds", ti);
                o.Set("topLogprobs", float_array(env, tlps->data(), tlps->size()));
                return o;
            });
        });
    }

    Napi::Value get_logits(const Napi::CallbackInfo & info) {
        const int32_t row = int_arg(info, 0, "batchIndex");
        return enqueue(info.Env(), job_kind::work, [this, row](xglm_context *& ctx) -> job_result {
            const float * logits = xglm_get_logits(ctx, row);
            if (!logits) return no_logits(row);
            auto copy = std::make_shared<std::vector<float>>(logits, logits + n_vocab_);
            return ok([copy](Napi::Env env) -> Napi::Value { return float_array(env, copy->data(), copy->size()); });
        });
    }

    Napi::Value get_activation(const Napi::CallbackInfo & info) {
        if (!info[0].IsString()) throw Napi::TypeError::New(info.Env(), "xglm: getActivation(name): name must be a string");
        std::string name = info[0].As<Napi::String>();
        return enqueue(info.Env(), job_kind::work, [name](xglm_context *& ctx) -> job_result {
            const std::vector<float> * a = xglm_get_activation(ctx, name);
            if (!a) return ok([](Napi::Env env) -> Napi::Value { return env.Null(); });
            auto copy = std::make_shared<std::vector<float>>(*a);
            return ok([copy](Napi::Env env) -> Napi::Value { return float_array(env, copy->data(), copy->size()); });
        });
    }

    Napi::Value kv_clear(const Napi::CallbackInfo & info) {
        return enqueue(info.Env(), job_kind::work, [](xglm_context *& ctx) {
            xglm_kv_clear(ctx);
            return ok();
        });
    }

    Napi::Value kv_remove(const Napi::CallbackInfo & info) {
        const int32_t seq = int_arg(info, 0, "seqId"), p0 = int_arg(info, 1, "p0"), p1 = int_arg(info, 2, "p1");
        return enqueue(info.Env(), job_kind::work, [seq, p0, p1](xglm_context *& ctx) {
            xglm_kv_seq_rm(ctx, seq, p0, p1);
            return ok();
        });
    }

    Napi::Value kv_copy(const Napi::CallbackInfo & info) {
        const int32_t src = int_arg(info, 0, "srcSeqId"), dst = int_arg(info, 1, "dstSeqId");
        const int32_t p0 = int_arg(info, 2, "p0"), p1 = int_arg(info, 3, "p1");
        return enqueue(info.Env(), job_kind::work, [src, dst, p0, p1](xglm_context *& ctx) {
            xglm_kv_seq_cp(ctx, src, dst, p0, p1);
            return ok();
        });
    }

    Napi::Value kv_seq_pos_max(const Napi::CallbackInfo & info) {
        const int32_t seq = int_arg(info, 0, "seqId");
        return enqueue(info.Env(), job_kind::work, [seq](xglm_context *& ctx) {
            const int32_t m = xglm_kv_seq_pos_max(ctx, seq);
            return ok([m](Napi::Env env) -> Napi::Value { return Napi::Number::New(env, m); });
        });
    }

    Napi::Value abort(const Napi::CallbackInfo & info) {
        request_abort();
        return info.Env().Undefined();
    }

    Napi::Value dispose(const Napi::CallbackInfo & info) {
        Napi::Env env = info.Env();
        if (disposed_) {
            auto d = Napi::Promise::Deferred::New(env);
            d.Resolve(env.Undefined());
            return d.Promise();
        }
        disposing_ = true;  // queued work is rejected, not run
        request_abort();
        Napi::Value promise = enqueue(env, job_kind::stop, [](xglm_context *&) { return ok(); });
        disposed_ = true;
        return promise;
    }

    // Queues work for the context thread; the promise settles on the JS thread.
    Napi::Value enqueue(Napi::Env env, job_kind kind, std::function<job_result(xglm_context *&)> run,
                        std::shared_ptr<token_stream> stream = nullptr, const std::function<void(job *)> & fill = nullptr) {
        auto * j = new job{Napi::Promise::Deferred::New(env), kind, abort_epoch_.load(), std::move(run), {}, std::move(stream), nullptr, false, -1, -1, 0};
        if (j->stream) j->stream->owner = j;
        if (fill) fill(j);
        Napi::Promise promise = j->deferred.Promise();
        if (disposed_) {
            j->deferred.Reject(coded_error(env, "ERR_XGLM_DISPOSED", "the context was disposed").Value());
            delete j;
            return promise;
        }
        if (pending_++ == 0) {
            tsfn_.Ref(env);
            Ref();  // keep this wrapper alive while work is in flight
        }
        {
            std::lock_guard<std::mutex> lock(mutex_);
            queue_.push_back(j);
        }
        cv_.notify_one();
        return promise;
    }

    // Delivers a message from the context thread (JS thread; env is null when the env is going away).
    static void deliver(Napi::Env env, Napi::Function, Context * self, message * m) {
        std::unique_ptr<message> owned(m);
        if (m->is_progress) {
            if (env != nullptr && !m->j->stream->progress.IsEmpty()) {
                try {
                    Napi::HandleScope scope(env);
                    m->j->stream->progress.Call({Napi::Number::New(env, m->token)});
                } catch (const Napi::Error &) {
                }
            }
        } else if (m->is_token) {
            if (env != nullptr) deliver_token(env, *m);
        } else {
            settle_job(env, self, m->j);
        }
    }

    // Every token reaches the callback, also after a stop: JS keeps count of what was evaluated.
    static void deliver_token(Napi::Env env, const message & m) {
        token_stream & s = *m.j->stream;
        try {
            Napi::HandleScope scope(env);
            Napi::Value       r = s.callback.Call({Napi::Number::New(env, m.token), Napi::Number::New(env, m.compute_ms)});
            if (r.ToBoolean()) s.stop.store(true);
        } catch (const Napi::Error &) {
            s.stop.store(true);  // the JS side catches its own errors; this is a terminating env
        }
        std::lock_guard<std::mutex> lock(s.mutex);
        ++s.seen;  // the context thread reads it before each step (ready in run_step)
    }

    // Settles a finished job's promise.
    static void settle_job(Napi::Env env, Context * self, job * j) {
        std::unique_ptr<job> owned(j);
        if (j->stream_params || j->stream_key >= 0) self->streams_by_key_.erase(j->stream_key);
        if (env == nullptr) {
            if (j->stream) {
                j->stream->callback.SuppressDestruct();
                j->stream->progress.SuppressDestruct();
            }
            return;
        }
        // While a worker thread is being terminated JS cannot run: building the value or
        // settling the promise throws, and an exception escaping this callback would abort
        // the whole process. Nobody can observe the promise any more, so it stays pending.
        try {
            Napi::HandleScope  scope(env);
            const job_result & r = j->result;
            if (r.code) {
                j->deferred.Reject(coded_error(env, r.code, r.message).Value());
            } else {
                j->deferred.Resolve(r.value ? r.value(env) : env.Undefined());
            }
        } catch (const Napi::Error &) {
        }
        if (j->kind == job_kind::stop && self->thread_.joinable()) self->thread_.join();
        if (--self->pending_ == 0) {
            // These fail too while the env is terminating; nothing may escape (see above).
            try {
                self->tsfn_.Unref(env);
            } catch (const Napi::Error &) {
            }
            try {
                self->Unref();
            } catch (const Napi::Error &) {
            }
        }
    }

    void request_abort() {
        ++abort_epoch_;
        std::lock_guard<std::mutex> lock(mutex_);
        if (ctx_) xglm_context_set_abort(ctx_, true);
    }

    // Stops the thread synchronously (finalizer, env teardown): the running graph stops at
    // its next node; queued jobs are dropped with the env.
    void shutdown() {
        {
            std::lock_guard<std::mutex> lock(live_mutex());
            live_contexts().erase(this);
        }
        {
            std::lock_guard<std::mutex> lock(mutex_);
            if (released_) return;
            if (!shut_down_) {  // (stop_for_exit may have stopped the thread already)
                shut_down_ = true;
                ++abort_epoch_;
                if (ctx_) xglm_context_set_abort(ctx_, true);
            }
        }
        cv_.notify_one();
        if (thread_.joinable()) thread_.join();
        std::lock_guard<std::mutex> lock(mutex_);
        released_ = true;
        for (job * j : queue_) delete j;  // on the JS thread (finalizer or env cleanup)
        queue_.clear();
        for (job * j : active_) delete j;
        for (job * j : waiting_) delete j;
        active_.clear();
        waiting_.clear();
        sched_.reset();
        xglm_context_free(ctx_);
        ctx_ = nullptr;
        tsfn_.Release();
    }

    // ---- context thread -------------------------------------------------------------

    // Hands a finished job to the JS thread.
    void post_job(job * j) {
        auto * m = new message{j};
        if (tsfn_.NonBlockingCall(m) != napi_ok) {
            // the env is going away; a JS reference must not be freed off its thread
            if (j->stream) {
                j->stream->callback.SuppressDestruct();
                j->stream->progress.SuppressDestruct();
            }
            delete j;
            delete m;
        }
    }

    job_result stream_done(job * j) {
        int64_t steps = 0;
        int32_t pos   = j->stream_params->gen.position - static_cast<int32_t>(j->stream_params->prompt.size());
        if (sched_) sched_->progress(j->stream_id, &steps, &pos);
        return stream_result(steps, pos);
    }

    // A generate() job's resolution: { steps, endPosition }.
    static job_result stream_result(int64_t steps, int32_t pos) {
        return ok([steps, pos](Napi::Env env) -> Napi::Value {
            Napi::Object r = Napi::Object::New(env);
            r.Set("steps", static_cast<double>(steps));
            r.Set("endPosition", pos);
            return r;
        });
    }

    // Ends an admitted (or waiting) stream with `result` and removes it from the scheduler.
    void end_stream(job * j, job_result result) {
        j->result = std::move(result);
        if (sched_ && j->stream_id >= 0) sched_->remove(j->stream_id);
        active_.erase(std::remove(active_.begin(), active_.end(), j), active_.end());
        waiting_.erase(std::remove(waiting_.begin(), waiting_.end(), j), waiting_.end());
        post_job(j);
    }

    // Admits a generate() job to the scheduler: true when it runs or waits for cells.
    bool admit(job * j) {
        if (!sched_) sched_ = std::make_unique<xglm_scheduler>(ctx_, PREFILL_CHUNK);
        xglm_status st;
        std::string err;
        const int64_t id = sched_->add(*j->stream_params, &st, &err);
        if (id >= 0) {
            j->stream_id = id;
            active_.push_back(j);
            return true;
        }
        if (st == XGLM_ERR_KV_FULL && j->wait_for_cells && !active_.empty()) return true;
        j->result = decode_result(st, std::move(err));
        return false;
    }

    // Before a step: streams stopped by JS, aborted or disposed leave; waiting ones retry.
    void sweep() {
        const uint64_t epoch = abort_epoch_.load();
        for (job * j : std::vector<job *>(active_)) {
            if (disposing_ || j->abort_epoch != epoch) {
                end_stream(j, error("ERR_XGLM_ABORTED", "evaluation aborted"));
            } else if (j->stream->stop.load()) {
                end_stream(j, stream_done(j));
            }
        }
        for (job * j : std::vector<job *>(waiting_)) {
            if (disposing_ || j->abort_epoch != epoch) {
                end_stream(j, error("ERR_XGLM_ABORTED", "evaluation aborted"));
            } else if (j->stream->stop.load()) {
                end_stream(j, stream_done(j));
            } else {
                waiting_.erase(std::remove(waiting_.begin(), waiting_.end(), j), waiting_.end());
                if (!admit(j)) post_job(j);
                else if (j->stream_id < 0) waiting_.push_back(j);
            }
        }
    }

    // One step of the scheduler; false when no stream could run.
    bool run_step(xglm_context * ctx) {
        sweep();
        if (active_.empty()) return false;
        auto find = [this](int64_t id) -> job * {
            for (job * j : active_) if (j->stream_id == id) return j;
            return nullptr;
        };
        auto ready = [&](int64_t id) {
            job * j = find(id);
            if (!j) return false;
            std::lock_guard<std::mutex> lock(j->stream->mutex);
            return j->stream->seen + token_stream::LOOKAHEAD >= j->posted;
        };
        std::vector<xglm_step_event> events;
        xglm_status st;
        std::string err;
        const bool ran = sched_->step(ready, &events, &st, &err);
        compute_ns_.store(xglm_compute_ns(ctx));
        if (st == XGLM_ABORTED) {
            xglm_context_set_abort(ctx, false);  // the next sweep ends the aborted streams
            return true;
        }
        if (st != XGLM_OK) {
            // the batch failed as a whole: every stream in it ends with the error
            for (job * j : std::vector<job *>(active_)) end_stream(j, decode_result(st, err));
            return true;
        }
        for (xglm_step_event & e : events) {
            job * j = find(e.id);
            if (!j) continue;
            if (!e.drawn && e.status == XGLM_OK && !j->stream->progress.IsEmpty()) {
                auto * m = new message{j, false, e.prompt_done, 0, true};
                if (tsfn_.NonBlockingCall(m) != napi_ok) delete m;
            }
            if (e.drawn) {
                ++j->posted;
                post_token(*j->stream, e.token);
            }
            if (e.finished) {
                j->stream_id = -1;  // the scheduler removed it
                if (e.status == XGLM_OK) {
                    end_stream(j, stream_result(e.steps, e.position));
                } else {
                    end_stream(j, decode_result(e.status, std::move(e.error)));
                }
            }
        }
        return ran;
    }

    // Ends every stream (dispose, a failed context).
    void end_all_streams(const char * code, const char * message) {
        for (job * j : std::vector<job *>(active_)) end_stream(j, error(code, message));
        for (job * j : std::vector<job *>(waiting_)) end_stream(j, error(code, message));
        sched_.reset();
    }

    void loop() {
        for (;;) {
            job * j = nullptr;
            {
                std::unique_lock<std::mutex> lock(mutex_);
                if (active_.empty() && waiting_.empty()) {
                    cv_.wait(lock, [this] { return shut_down_ || !queue_.empty(); });
                }
                if (shut_down_) return;
                if (!queue_.empty()) {
                    j = queue_.front();
                    queue_.pop_front();
                }
            }
            if (!j) {
                // streams run; queued work goes between their steps
                if (!run_step(ctx_)) {
                    std::unique_lock<std::mutex> lock(mutex_);  // every stream waits for JS to catch up
                    cv_.wait_for(lock, std::chrono::milliseconds(1), [this] { return shut_down_ || !queue_.empty(); });
                }
                continue;
            }
            if (ctx_ && active_.empty()) xglm_context_set_abort(ctx_, false);
            bool posted = true;
            if (j->kind == job_kind::stop) {
                end_all_streams("ERR_XGLM_ABORTED", "evaluation aborted");
                std::lock_guard<std::mutex> lock(mutex_);
                xglm_context_free(ctx_);
                ctx_      = nullptr;
                j->result = ok();
            } else if (disposing_) {
                j->result = error("ERR_XGLM_DISPOSED", "the context was disposed");
            } else if (j->abort_epoch != abort_epoch_.load()) {
                j->result = error("ERR_XGLM_ABORTED", "evaluation aborted");
            } else if (j->kind == job_kind::work && !ctx_) {
                j->result = error("ERR_XGLM_DISPOSED", "the context failed to initialize");
            } else if (j->stream_params) {
                if (admit(j)) {
                    if (j->stream_id < 0) waiting_.push_back(j);
                    posted = false;  // settles when its stream ends
                }
            } else {
                xglm_context * ctx = ctx_;
                j->result          = j->run(ctx);
                if (ctx != ctx_) {  // the create job made it
                    std::lock_guard<std::mutex> lock(mutex_);
                    ctx_ = ctx;
                }
            }
            if (!posted) continue;
            const bool stop = j->kind == job_kind::stop;
            post_job(j);
            if (stop) return;
        }
    }

    // Prompt tokens per step while other streams decode: a running stream waits for at most
    // this many prompt tokens per token (about one token's time on the 564M model).
    static constexpr int32_t PREFILL_CHUNK = 64;

    using tsfn_t = Napi::TypedThreadSafeFunction<Context, message, &Context::deliver>;

    tsfn_t                   tsfn_;
    Napi::Env::CleanupHook<void (*)(Context *), Context> cleanup_;
    std::thread              thread_;
    std::mutex               mutex_;
    std::condition_variable  cv_;
    bool                     loop_done_ = false;  // the context thread left loop()
    std::condition_variable  loop_done_cv_;
    std::deque<job *>        queue_;
    bool                     shut_down_ = false;  // the context thread is to stop
    bool                     released_  = false;  // shutdown() freed everything (JS thread)
    std::atomic<uint64_t>    abort_epoch_{0};
    xglm_context *           ctx_ = nullptr;  // owned by the context thread once created
    // context thread: the scheduler and the generate() jobs it runs or that wait for cells
    std::unique_ptr<xglm_scheduler> sched_;
    std::vector<job *>       active_;
    std::vector<job *>       waiting_;
    std::map<double, std::weak_ptr<token_stream>> streams_by_key_;  // JS thread (stopStream)
    int                      pending_  = 0;   // JS thread
    bool                     disposed_ = false;   // JS thread
    std::atomic<bool>        disposing_{false};

    // written by the context thread (the getter reads the atomics)
    std::mt19937_64       rng_{std::random_device{}()};
    int32_t               n_vocab_ = 0;
    std::atomic<uint32_t> n_ctx_{0};
    std::atomic<int32_t>  n_threads_{0};
    std::atomic<uint64_t> compute_ns_{0};  // xglm_compute_ns after the last evaluate
};

}  // namespace

namespace {

// The contexts of one env (nullptr: all) stop their threads for the process's exit.
void stop_for_exit(napi_env env) {
    std::lock_guard<std::mutex> lock(live_mutex());
    for (Context * c : live_contexts()) {
        if (env == nullptr || napi_env(c->Env()) == env) c->stop_for_exit();
    }
}

void stop_all_at_exit() { stop_for_exit(nullptr); }

// stopForExit(): src/native.ts calls it from process.on('exit'), while the env is still whole
// (the atexit handler comes later, after Node has begun tearing the env down, and only catches
// what this missed, e.g. an exit() from native code).
Napi::Value stop_for_exit_js(const Napi::CallbackInfo & info) {
    stop_for_exit(info.Env());
    return info.Env().Undefined();
}

}  // namespace

void init_context(Napi::Env env, Napi::Object exports) {
    static const bool guarded = std::atexit(stop_all_at_exit) == 0;  // once per process
    (void)guarded;
    exports.Set("stopForExit", Napi::Function::New(env, stop_for_exit_js, "stopForExit"));
    Napi::Function ctor                  = Context::define(env);
    addon_data(env).context_constructor  = Napi::Persistent(ctor);
    exports.Set("Context", ctor);
}
