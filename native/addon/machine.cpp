// Machine limits for the benchmark (bench/): memory read bandwidth and peak FP32 FMA
// throughput, each with N threads. Figures to compare decode and prefill speed against.
//
// JS sees:
//   measureReadBandwidth(bytes, threads, repetitions) -> Promise<GB/s>  (best repetition)
//   measurePeakFlops(threads) -> Promise<GFLOP/s FP32>
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "addon.h"

namespace {

using clock_type = std::chrono::steady_clock;

// Sums n floats with several independent accumulators so loads, not adds, are the limit.
#if defined(__x86_64__)
__attribute__((target("avx2"))) float sum_avx2(const float * p, size_t n) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        a0 = _mm256_add_ps(a0, _mm256_load_ps(p + i));
        a1 = _mm256_add_ps(a1, _mm256_load_ps(p + i + 8));
        a2 = _mm256_add_ps(a2, _mm256_load_ps(p + i + 16));
        a3 = _mm256_add_ps(a3, _mm256_load_ps(p + i + 24));
    }
    float out[8];
    _mm256_storeu_ps(out, _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
    float s = 0;
    for (float v : out) s += v;
    for (; i < n; ++i) s += p[i];
    return s;
}

// 10 independent FMA chains of 8 lanes: hides FMA latency on any AVX2 core.
__attribute__((target("avx2,fma"))) float fma_avx2(int64_t iters) {
    __m256 acc[10];
    for (int k = 0; k < 10; ++k) acc[k] = _mm256_set1_ps(0.001f * k);
    const __m256 m = _mm256_set1_ps(0.9999f), c = _mm256_set1_ps(0.0001f);
    for (int64_t i = 0; i < iters; ++i) {
        for (int k = 0; k < 10; ++k) acc[k] = _mm256_fmadd_ps(acc[k], m, c);
    }
    __m256 s = acc[0];
    for (int k = 1; k < 10; ++k) s = _mm256_add_ps(s, acc[k]);
    float out[8];
    _mm256_storeu_ps(out, s);
    return out[0];
}
#endif

float sum_scalar(const float * p, size_t n) {
    float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        s0 += p[i], s1 += p[i + 1], s2 += p[i + 2], s3 += p[i + 3];
    }
    for (; i < n; ++i) s0 += p[i];
    return s0 + s1 + s2 + s3;
}

bool have_avx2_fma() {
#if defined(__x86_64__)
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return false;
#endif
}

template <typename F> double run_threads(int n_threads, F && body) {
    std::vector<std::thread> threads;
    const auto t0 = clock_type::now();
    for (int t = 0; t < n_threads; ++t) threads.emplace_back(body, t);
    for (auto & th : threads) th.join();
    return std::chrono::duration<double>(clock_type::now() - t0).count();
}

class BandwidthWorker : public Napi::AsyncWorker {
  public:
    BandwidthWorker(Napi::Env env, size_t bytes, int threads, int reps) :
        Napi::AsyncWorker(env, "xglm.measureReadBandwidth"), deferred_(Napi::Promise::Deferred::New(env)),
        bytes_(bytes), threads_(threads), reps_(reps) {}
    Napi::Promise promise() const { return deferred_.Promise(); }

  protected:
    void Execute() override {
        const size_t n = bytes_ / sizeof(float) / 32 * 32;
        float * buf = static_cast<float *>(std::aligned_alloc(64, n * sizeof(float)));
        if (buf == nullptr) {
            SetError("xglm: could not allocate the bandwidth buffer");
            return;
        }
        // Touch every page from the thread that will read it (first-touch placement).
        const size_t per = n / threads_ / 32 * 32;
        run_threads(threads_, [&](int t) { std::memset(buf + t * per, 0, per * sizeof(float)); });
        const bool simd = have_avx2_fma();
        std::vector<float> sink(threads_);
        double best = 0;
        for (int r = 0; r < reps_; ++r) {
            const double s = run_threads(threads_, [&](int t) {
#if defined(__x86_64__)
                sink[t] = simd ? sum_avx2(buf + t * per, per) : sum_scalar(buf + t * per, per);
#else
                sink[t] = sum_scalar(buf + t * per, per);
#endif
            });
            best = std::max(best, static_cast<double>(per) * threads_ * sizeof(float) / s / 1e9);
        }
        std::free(buf);
        result_ = best + 0 * sink[0];
    }
    void OnOK() override { deferred_.Resolve(Napi::Number::New(Env(), result_)); }
    void OnError(const Napi::Error & e) override { deferred_.Reject(e.Value()); }

  private:
    Napi::Promise::Deferred deferred_;
    size_t bytes_;
    int threads_, reps_;
    double result_ = 0;
};

class FlopsWorker : public Napi::AsyncWorker {
  public:
    FlopsWorker(Napi::Env env, int threads) :
        Napi::AsyncWorker(env, "xglm.measurePeakFlops"), deferred_(Napi::Promise::Deferred::New(env)), threads_(threads) {}
    Napi::Promise promise() const { return deferred_.Promise(); }

  protected:
    void Execute() override {
        if (!have_avx2_fma()) {
            SetError("xglm: peak FLOP/s is measured with AVX2+FMA, which this CPU lacks");
            return;
        }
#if defined(__x86_64__)
        const int64_t iters = 50'000'000;
        std::vector<float> sink(threads_);
        double best = 0;
        for (int r = 0; r < 3; ++r) {
            const double s = run_threads(threads_, [&](int t) { sink[t] = fma_avx2(iters); });
            best = std::max(best, static_cast<double>(iters) * 10 * 8 * 2 * threads_ / s / 1e9);
        }
        result_ = best + 0 * sink[0];
#endif
    }
    void OnOK() override { deferred_.Resolve(Napi::Number::New(Env(), result_)); }
    void OnError(const Napi::Error & e) override { deferred_.Reject(e.Value()); }

  private:
    Napi::Promise::Deferred deferred_;
    int threads_;
    double result_ = 0;
};

int threads_arg(const Napi::CallbackInfo & info, size_t i) {
    const int64_t t = info[i].IsNumber() ? info[i].As<Napi::Number>().Int64Value() : 1;
    return static_cast<int>(std::clamp<int64_t>(t, 1, 256));
}

Napi::Value measure_read_bandwidth(const Napi::CallbackInfo & info) {
    const double bytes = info[0].IsNumber() ? info[0].As<Napi::Number>().DoubleValue() : 0;
    if (!(bytes >= 1 << 20 && bytes <= 64.0 * (1ull << 30))) {
        throw Napi::RangeError::New(info.Env(), "xglm: bytes must be between 1 MiB and 64 GiB");
    }
    const int64_t reps = info[2].IsNumber() ? info[2].As<Napi::Number>().Int64Value() : 5;
    auto * w = new BandwidthWorker(info.Env(), static_cast<size_t>(bytes), threads_arg(info, 1),
                                   static_cast<int>(std::clamp<int64_t>(reps, 1, 100)));
    Napi::Promise p = w->promise();
    w->Queue();
    return p;
}

Napi::Value measure_peak_flops(const Napi::CallbackInfo & info) {
    auto * w = new FlopsWorker(info.Env(), threads_arg(info, 0));
    Napi::Promise p = w->promise();
    w->Queue();
    return p;
}

}  // namespace

void init_machine(Napi::Env env, Napi::Object exports) {
    exports.Set("measureReadBandwidth", Napi::Function::New(env, measure_read_bandwidth, "measureReadBandwidth"));
    exports.Set("measurePeakFlops", Napi::Function::New(env, measure_peak_flops, "measurePeakFlops"));
}
