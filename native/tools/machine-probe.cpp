// xglm-machine-probe: machine limits for the benchmark (bench/index.ts), memory read bandwidth
// and peak FP32 FMA throughput with N threads, figures to compare decode and prefill speed
// against. A diagnostic executable, not part of the addon: bench builds it on demand
// (CMake target xglm-machine-probe, EXCLUDE_FROM_ALL) and reads its one JSON line.
//
//   xglm-machine-probe bandwidth BYTES THREADS REPETITIONS   -> {"bandwidth_gbs": best repetition}
//   xglm-machine-probe flops THREADS                         -> {"gflops": FP32 FMA GFLOP/s of the
//       widest vector unit, "isa": "avx512"|"avx2", "gflops_avx2": …, ["gflops_avx512": …]}
// The FMA loops carry target attributes, so the file builds without -mavx2/-mavx512f; which one
// runs is decided at run time (AVX-512F when present). On some cores (AMD Zen 4) a 512-bit FMA
// is issued as two 256-bit halves, so both widths are measured and reported.
// On failure: {"error": "..."} and exit status 1.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

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

// The same with 512-bit vectors: 10 chains of 16 lanes.
__attribute__((target("avx512f"))) float fma_avx512(int64_t iters) {
    __m512 acc[10];
    for (int k = 0; k < 10; ++k) acc[k] = _mm512_set1_ps(0.001f * k);
    const __m512 m = _mm512_set1_ps(0.9999f), c = _mm512_set1_ps(0.0001f);
    for (int64_t i = 0; i < iters; ++i) {
        for (int k = 0; k < 10; ++k) acc[k] = _mm512_fmadd_ps(acc[k], m, c);
    }
    __m512 s = acc[0];
    for (int k = 1; k < 10; ++k) s = _mm512_add_ps(s, acc[k]);
    float out[16];
    _mm512_storeu_ps(out, s);
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

bool have_avx512f() {
#if defined(__x86_64__)
    return __builtin_cpu_supports("avx512f");
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

// Best of `reps` reads of `bytes` split over n_threads threads, in GB/s; < 0 when out of memory.
double read_bandwidth(size_t bytes, int n_threads, int reps) {
    const size_t n   = bytes / sizeof(float) / 32 * 32;
    float *      buf = static_cast<float *>(std::aligned_alloc(64, n * sizeof(float)));
    if (buf == nullptr) return -1;
    // Touch every page from the thread that will read it (first-touch placement).
    const size_t per = n / n_threads / 32 * 32;
    run_threads(n_threads, [&](int t) { std::memset(buf + t * per, 0, per * sizeof(float)); });
    const bool         simd = have_avx2_fma();
    std::vector<float> sink(n_threads);
    double             best = 0;
    for (int r = 0; r < reps; ++r) {
        const double s = run_threads(n_threads, [&](int t) {
#if defined(__x86_64__)
            sink[t] = simd ? sum_avx2(buf + t * per, per) : sum_scalar(buf + t * per, per);
#else
            sink[t] = sum_scalar(buf + t * per, per);
#endif
        });
        best = std::max(best, static_cast<double>(per) * n_threads * sizeof(float) / s / 1e9);
    }
    std::free(buf);
    return best + 0 * sink[0];
}

// Peak FP32 FMA GFLOP/s with n_threads threads, best of 3, with 256-bit (AVX2+FMA; the caller
// checks have_avx2_fma) or 512-bit vectors (the caller checks have_avx512f).
double peak_flops(int n_threads, bool zmm) {
    double best = 0;
#if defined(__x86_64__)
    const int64_t      iters = zmm ? 25'000'000 : 50'000'000;
    const int          lanes = zmm ? 16 : 8;
    std::vector<float> sink(n_threads);
    for (int r = 0; r < 3; ++r) {
        const double s = run_threads(n_threads, [&](int t) { sink[t] = zmm ? fma_avx512(iters) : fma_avx2(iters); });
        best           = std::max(best, static_cast<double>(iters) * 10 * lanes * 2 * n_threads / s / 1e9);
    }
    best += 0 * sink[0];
#endif
    return best;
}

int fail(const std::string & message) {
    std::printf("{\"error\": \"%s\"}\n", message.c_str());
    return 1;
}

// A whole number in [lo, hi], or -1.
int64_t number(const char * s, int64_t lo, int64_t hi) {
    char *        end = nullptr;
    const int64_t v   = std::strtoll(s, &end, 10);
    return end != s && *end == '\0' && v >= lo && v <= hi ? v : -1;
}

}  // namespace

int main(int argc, char ** argv) {
    const std::string what = argc > 1 ? argv[1] : "";
    if (what == "bandwidth" && argc == 5) {
        const int64_t bytes = number(argv[2], int64_t{1} << 20, int64_t{64} << 30);
        const int64_t n_threads = number(argv[3], 1, 256), reps = number(argv[4], 1, 100);
        if (bytes < 0) return fail("bytes must be between 1 MiB and 64 GiB");
        if (n_threads < 0 || reps < 0) return fail("threads must be 1..256 and repetitions 1..100");
        const double gbs = read_bandwidth(static_cast<size_t>(bytes), static_cast<int>(n_threads), static_cast<int>(reps));
        if (gbs < 0) return fail("could not allocate the bandwidth buffer");
        std::printf("{\"bandwidth_gbs\": %.3f}\n", gbs);
        return 0;
    }
    if (what == "flops" && argc == 3) {
        const int64_t n_threads = number(argv[2], 1, 256);
        if (n_threads < 0) return fail("threads must be 1..256");
        if (!have_avx2_fma()) return fail("peak FLOP/s is measured with AVX2+FMA, which this CPU lacks");
        const double ymm = peak_flops(static_cast<int>(n_threads), false);
        if (!have_avx512f()) {
            std::printf("{\"gflops\": %.3f, \"isa\": \"avx2\", \"gflops_avx2\": %.3f}\n", ymm, ymm);
            return 0;
        }
        const double zmm = peak_flops(static_cast<int>(n_threads), true);
        std::printf("{\"gflops\": %.3f, \"isa\": \"avx512\", \"gflops_avx2\": %.3f, \"gflops_avx512\": %.3f}\n", zmm, ymm, zmm);
        return 0;
    }
    std::fprintf(stderr, "usage: xglm-machine-probe bandwidth BYTES THREADS REPETITIONS | flops THREADS\n");
    return 2;
}
