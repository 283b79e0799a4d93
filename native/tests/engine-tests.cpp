// xglm-engine-tests: the engine and its custom ops tested in C++, without Node: KV cells,
// sampling, the kernel plan, each custom op against ggml's own nodes on random inputs, and (given
// a GGUF file) the generation step. No framework: a case is a function that returns, throws a
// failure, or throws a skip with its reason.
//
//   xglm-engine-tests                  every case
//   xglm-engine-tests NAME...          only these cases
//   xglm-engine-tests --list           the cases, one JSON line each: {"name", "skip", "gguf"}
//   xglm-engine-tests --gguf PATH      the model for the cases that need one (else they skip)
//
// Output: one JSON line per case, {"name", "status": "pass" | "fail" | "skip", "message"};
// exit status 1 when a case failed. test/engine-native.test.ts runs each case as an ava test.
// Ops run where the kernel plan of this process (CPU variant and environment, as a context would
// decide it) enables them; elsewhere they are reported as skipped with the plan's reason.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "attention.h"
#include "decode-gemv.h"
#include "ggml-alloc.h"
#include "ggml-backend.h"
#include "gelu.h"
#include "kernel-plan.h"
#include "layer-norm.h"
#include "xglm-impl.h"
#include "xglm.h"

#ifdef _WIN32
// The C runtime has _putenv_s (an empty value removes the variable), not setenv/unsetenv.
static int setenv(const char * name, const char * value, int /*overwrite*/) { return _putenv_s(name, value); }
static int unsetenv(const char * name) { return _putenv_s(name, ""); }
#endif

namespace {

// ---------------------------------------------------------------------------------------
// the harness

struct failure {
    std::string message;
};
struct skipped {
    std::string reason;
};

#define CHECK(cond, msg)                                                                              \
    do {                                                                                              \
        if (!(cond)) throw failure{std::string(msg) + " (" #cond ", line " + std::to_string(__LINE__) + ")"}; \
    } while (0)

std::string g_gguf;  // --gguf
std::string g_note;  // what a passing case measured, reported as its message

std::string json_escape(const std::string & s) {
    std::string out;
    for (char c : s) {
        if (c == '"' || c == '\\') {
            out += '\\';
            out += c;
        } else if (static_cast<unsigned char>(c) < 0x20) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\u%04x", c);
            out += buf;
        } else {
            out += c;
        }
    }
    return out;
}

std::string fmt(const char * f, double a, double b = 0, double c = 0) {
    char buf[256];
    std::snprintf(buf, sizeof buf, f, a, b, c);
    return buf;
}

// The kernel plan a context made now would use (kernel-plan.h).
xglm_kernel_plan current_plan() {
    xglm_kernel_plan plan;
    std::string      err;
    if (!xglm_kernel_plan_from_env(xglm_backend_kernel_isa(), xglm_backend_kernel_vnni(), &plan, &err)) throw failure{err};
    return plan;
}

// Why an op the plan does not enable (`on` false) cannot be tested here; "" when it can.
std::string op_skip_reason(bool on, const char * op) {
    if (on) return "";
    const char * k = std::getenv("XGLM_KERNELS");
    std::string  why;
    if (k != nullptr && std::strcmp(k, "ggml") == 0) {
        why = "XGLM_KERNELS=ggml";
    } else if (xglm_backend_kernel_isa() == xglm_kernel_isa::none) {
        why = "this ggml CPU variant runs no AVX2 code (kernels: none)";
    } else {
        why = "switched off by XGLM_NO_CUSTOM_ATTN / XGLM_NO_CUSTOM_GEMV";
    }
    return std::string("the kernel plan does not run the ") + op + " op: " + why;
}

// Why the VNNI forms of the decode-gemv products do not run here.
const char * const no_vnni_reason =
    "the kernel plan has no AVX-512 VNNI products: this ggml CPU variant runs no AVX-512 VNNI code, or XGLM_KERNELS=avx2";

std::vector<float> random_floats(size_t n, uint32_t seed, float scale = 1.0f) {
    std::mt19937                    rng(seed);
    std::normal_distribution<float> d(0.0f, scale);
    std::vector<float>              v(n);
    for (auto & x : v) x = d(rng);
    return v;
}

// A small ggml world on the CPU backend: leaf tensors (inputs, weights) in buffers of their
// own, nodes allocated per graph, computed by the backend as the engine does.
struct ggml_world {
    ggml_backend_t                     backend = nullptr;
    std::vector<ggml_context *>        ctxs;
    std::vector<ggml_backend_buffer_t> bufs;
    ggml_gallocr_t                     galloc = nullptr;

    explicit ggml_world(int n_threads) {
        backend = ggml_backend_dev_init(xglm_cpu_device(), nullptr);
        if (!backend) throw failure{"ggml could not start its CPU backend"};
        using set_threads_t = void (*)(ggml_backend_t, int);
        if (auto set = reinterpret_cast<set_threads_t>(xglm_cpu_proc("ggml_backend_set_n_threads"))) set(backend, n_threads);
    }
    ~ggml_world() {
        if (galloc) ggml_gallocr_free(galloc);
        for (auto * b : bufs) ggml_backend_buffer_free(b);
        for (auto * c : ctxs) ggml_free(c);
        if (backend) ggml_backend_free(backend);
    }

    // A context for leaves (allocated by alloc) or nodes (of up to 4 graphs).
    ggml_context * context(size_t n_tensors = 64) {
        ggml_init_params ip = {ggml_tensor_overhead() * n_tensors + 4 * ggml_graph_overhead(), nullptr, true};
        ctxs.push_back(ggml_init(ip));
        return ctxs.back();
    }
    // Allocates the leaves of ctx in buft (default: the CPU buffer type).
    void alloc(ggml_context * ctx, ggml_backend_buffer_type_t buft = nullptr) {
        ggml_backend_buffer_t b =
            ggml_backend_alloc_ctx_tensors_from_buft(ctx, buft ? buft : ggml_backend_get_default_buffer_type(backend));
        if (!b) throw failure{"out of memory for the test tensors"};
        bufs.push_back(b);
    }
    // Computes `out` (built in a node context) after the nodes of `before`, in that order, and
    // returns its F32 values.
    std::vector<float> compute(ggml_context * nodes, ggml_tensor * out, std::initializer_list<ggml_tensor *> before = {}) {
        ggml_cgraph * gf = ggml_new_graph(nodes);
        for (ggml_tensor * t : before) ggml_build_forward_expand(gf, t);
        ggml_build_forward_expand(gf, out);
        if (!galloc) galloc = ggml_gallocr_new(ggml_backend_get_default_buffer_type(backend));
        if (!ggml_gallocr_alloc_graph(galloc, gf)) throw failure{"could not allocate the graph"};
        if (ggml_backend_graph_compute(backend, gf) != GGML_STATUS_SUCCESS) throw failure{"graph computation failed"};
        std::vector<float> v(ggml_nelements(out));
        ggml_backend_tensor_get(out, v.data(), 0, v.size() * sizeof(float));
        return v;
    }
};

void set_f32(ggml_tensor * t, const std::vector<float> & v) { ggml_backend_tensor_set(t, v.data(), 0, v.size() * sizeof(float)); }

// ggml_norm → ggml_mul → ggml_add, the graph's layer norm.
ggml_tensor * ggml_layer_norm(ggml_context * ctx, ggml_tensor * x, ggml_tensor * w, ggml_tensor * b, float eps) {
    return ggml_add(ctx, ggml_mul(ctx, ggml_norm(ctx, x, eps), w), b);
}

size_t count_bit_differences(const std::vector<float> & a, const std::vector<float> & b) {
    size_t n = 0;
    for (size_t i = 0; i < a.size(); ++i) n += std::memcmp(&a[i], &b[i], sizeof(float)) != 0;
    return n;
}

// GELU with libm's erff, as ggml's gelu_erf computes it.
float gelu_erff(float x) { return 0.5f * x * (1.0f + std::erf(x * 0.70710678118654752440f)); }

// ---------------------------------------------------------------------------------------
// KV cells

void kv_cells() {
    std::vector<xglm_kv_cell> cells(16);
    for (int c = 0; c < 10; ++c) cells[c] = {c, 1};  // sequence 0 at positions 0..9
    CHECK(xglm_cells_seq_pos_max(cells, 0) == 9, "pos_max of sequence 0");
    CHECK(xglm_cells_seq_pos_max(cells, 1) == -1, "an empty sequence's pos_max is -1");

    // seq_cp shares cells: [0, 5) of sequence 0 becomes visible to 1
    xglm_cells_seq_cp(cells, 0, 1, 0, 5);
    CHECK(xglm_cells_seq_pos_max(cells, 1) == 4, "pos_max after seq_cp of [0, 5)");
    for (int c = 0; c < 5; ++c) CHECK(cells[c].seq == 3, "copied cells are shared, not duplicated");
    CHECK(cells[5].seq == 1, "cells outside the range stay sequence 0's");

    // seq_rm to the end (p1 < 0): cells only sequence 0 saw are freed, shared ones stay for 1
    xglm_cells_seq_rm(cells, 0, 3, -1);
    CHECK(xglm_cells_seq_pos_max(cells, 0) == 2, "pos_max of sequence 0 after removing [3, end)");
    CHECK(cells[3].seq == 2 && cells[3].pos == 3, "a shared cell stays for the other sequence");
    for (int c = 5; c < 10; ++c) CHECK(!cells[c].used() && cells[c].pos == -1, "a cell no sequence sees is free");

    // seq_cp replaces dst's own cells in the range (a position is cached once per sequence)
    cells[10] = {0, 4};
    cells[11] = {1, 4};
    cells[12] = {7, 4};  // sequence 2 at positions 0, 1, 7
    xglm_cells_seq_cp(cells, 0, 2, 0, 2);
    CHECK(!cells[10].used() && !cells[11].used(), "dst's own cells in the range are removed");
    CHECK(cells[12].seq == 4 && cells[12].pos == 7, "dst's cells outside the range stay");
    CHECK((cells[0].seq & 4) && (cells[1].seq & 4) && !(cells[2].seq & 4), "src's cells in [0, 2) become dst's");
    CHECK(xglm_cells_seq_pos_max(cells, 2) == 7, "pos_max of the copy target");

    // ids outside [0, XGLM_MAX_SEQ) change nothing
    const std::vector<xglm_kv_cell> before = cells;
    xglm_cells_seq_rm(cells, -1, 0, -1);
    xglm_cells_seq_rm(cells, XGLM_MAX_SEQ, 0, -1);
    xglm_cells_seq_cp(cells, 0, XGLM_MAX_SEQ, 0, -1);
    xglm_cells_seq_cp(cells, 0, 0, 0, -1);
    for (size_t c = 0; c < cells.size(); ++c) CHECK(cells[c].seq == before[c].seq && cells[c].pos == before[c].pos, "invalid ids are no-ops");
    CHECK(xglm_cells_seq_pos_max(cells, -1) == -1 && xglm_cells_seq_pos_max(cells, XGLM_MAX_SEQ) == -1, "invalid ids have no positions");

    // the highest sequence id is a bit like any other
    xglm_cells_seq_cp(cells, 1, XGLM_MAX_SEQ - 1, 0, -1);
    CHECK(xglm_cells_seq_pos_max(cells, XGLM_MAX_SEQ - 1) == xglm_cells_seq_pos_max(cells, 1), "sequence 63");
}

// ---------------------------------------------------------------------------------------
// sampling

constexpr int32_t N_VOCAB = 5000;

void sampler_greedy() {
    std::vector<float> logits = random_floats(N_VOCAB, 1, 3.0f);
    xglm_sampler_params p;
    p.temperature = 0.0f;
    std::mt19937_64 rng(1);
    const int32_t   argmax = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    CHECK(xglm_sample(logits.data(), N_VOCAB, p, rng) == argmax, "temperature 0 draws the argmax");
    // ties go to the lowest id, also across the argmax's 256-entry blocks
    logits[4321] = logits[argmax];
    logits[17]   = logits[argmax];
    CHECK(xglm_sample(logits.data(), N_VOCAB, p, rng) == std::min(17, argmax), "ties go to the lowest id");
    // NaN and -inf never win; a row with nothing usable gives -1
    std::vector<float> bad(N_VOCAB, -INFINITY);
    bad[100] = std::nanf("");
    CHECK(xglm_sample(bad.data(), N_VOCAB, p, rng) == -1, "nothing usable: -1");
    bad[200] = -1e30f;
    CHECK(xglm_sample(bad.data(), N_VOCAB, p, rng) == 200, "the one finite entry");
    // a -inf bias bans the argmax
    p.logit_bias = {{argmax, -INFINITY}};
    logits       = random_floats(N_VOCAB, 1, 3.0f);
    CHECK(xglm_sample(logits.data(), N_VOCAB, p, rng) != argmax, "a banned token is never drawn");
}

// The ids of the k largest logits.
std::vector<int32_t> largest(const std::vector<float> & logits, int k) {
    std::vector<int32_t> ids(logits.size());
    for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>(i);
    std::partial_sort(ids.begin(), ids.begin() + k, ids.end(), [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
    ids.resize(k);
    return ids;
}

void sampler_top_k_top_p() {
    const std::vector<float> logits = random_floats(N_VOCAB, 2, 2.0f);
    const std::vector<int32_t> top3 = largest(logits, 3);
    xglm_sampler_params        p;
    p.temperature = 5.0f;  // flat enough that every kept candidate is drawn now and then
    p.top_k       = 3;
    std::vector<int> seen(N_VOCAB, 0);
    for (uint64_t s = 0; s < 400; ++s) {
        std::mt19937_64 rng(xglm_step_seed(7, s));
        const int32_t   id = xglm_sample(logits.data(), N_VOCAB, p, rng);
        CHECK(std::find(top3.begin(), top3.end(), id) != top3.end(), "top-k 3 draws only among the 3 largest");
        ++seen[id];
    }
    for (int32_t id : top3) CHECK(seen[id] > 0, "every top-3 candidate is drawn at a high temperature");

    // top-p: one dominant token (p ≈ 0.97) and a nucleus of 0.5 keep it alone
    std::vector<float> peaked = random_floats(N_VOCAB, 3, 0.1f);
    peaked[1234]              = 12.0f;
    xglm_sampler_params q;
    q.top_p = 0.5f;
    for (uint64_t s = 0; s < 50; ++s) {
        std::mt19937_64 rng(s);
        CHECK(xglm_sample(peaked.data(), N_VOCAB, q, rng) == 1234, "top-p 0.5 keeps only the dominant token");
    }
    // two tokens share ~all the mass: top-p 0.9 draws only those two
    peaked[99] = 12.0f;
    q.top_p    = 0.9f;
    for (uint64_t s = 0; s < 100; ++s) {
        std::mt19937_64 rng(s);
        const int32_t   id = xglm_sample(peaked.data(), N_VOCAB, q, rng);
        CHECK(id == 1234 || id == 99, "top-p 0.9 draws inside the nucleus");
    }
}

void sampler_seed() {
    const std::vector<float> logits = random_floats(N_VOCAB, 4, 1.0f);
    xglm_sampler_params      p;
    p.top_p = 0.95f;
    int differs = 0;
    for (uint64_t step = 0; step < 20; ++step) {
        std::mt19937_64 a(xglm_step_seed(42, step)), b(xglm_step_seed(42, step)), c(xglm_step_seed(43, step));
        const int32_t   ta = xglm_sample(logits.data(), N_VOCAB, p, a);
        CHECK(ta == xglm_sample(logits.data(), N_VOCAB, p, b), "the same seed draws the same token");
        differs += ta != xglm_sample(logits.data(), N_VOCAB, p, c);
    }
    CHECK(differs > 0, "another seed draws other tokens");
    CHECK(xglm_step_seed(1, 2) == xglm_step_seed(1, 2) && xglm_step_seed(1, 2) != xglm_step_seed(1, 3), "step seeds");
    CHECK(xglm_step_seed(123456789, 987654321) < (uint64_t(1) << 53), "a step seed fits a JS number");
}

void sampler_log_softmax() {
    for (uint32_t seed : {5u, 6u}) {
        std::vector<float> logits = random_floats(N_VOCAB + seed, seed, 4.0f);
        const int32_t      n      = static_cast<int32_t>(logits.size());
        if (seed == 6) logits[10] = -INFINITY;  // a banned entry adds nothing
        double max = -INFINITY;
        for (float l : logits) max = std::max(max, static_cast<double>(l));
        double sum = 0;
        for (float l : logits) sum += std::exp(static_cast<double>(l) - max);
        const double lse = max + std::log(sum);
        // the terms are float exponentials (sampler.cpp's exp_nonpositive, ~1e-7 relative each)
        // summed in double: the log of the sum is within ~1e-7 of the exact one
        const double e = std::fabs(xglm_log_sum_exp(logits.data(), n) - lse);
        CHECK(e < 1e-6, "log-sum-exp against the double reference: " + fmt("%.3g", e));
        double worst = 0;
        for (int32_t id : {0, 1, 777, n - 1}) {
            worst = std::max(worst, std::fabs(xglm_log_softmax_at(logits.data(), n, id) - (logits[id] - lse)));
        }
        CHECK(worst < 1e-6, "log-softmax against the double reference: " + fmt("%.3g", worst));
        g_note = fmt("worst |log-softmax - double reference| %.2g", worst);
        std::vector<int32_t> ids;
        std::vector<float>   lps;
        xglm_top_k(logits.data(), n, 5, &ids, &lps);
        CHECK(ids == largest(logits, 5), "top-k ids, most likely first");
        for (int i = 0; i < 5; ++i) CHECK(std::fabs(lps[i] - (logits[ids[i]] - lse)) < 1e-5, "top-k log-probabilities");
    }
}

// ---------------------------------------------------------------------------------------
// the kernel plan

struct env_guard {
    std::vector<std::pair<std::string, std::string>> saved;
    std::vector<std::string>                          unset;
    void set(const char * name, const char * value) {
        const char * old = std::getenv(name);
        if (old) {
            saved.emplace_back(name, old);
        } else {
            unset.emplace_back(name);
        }
        if (value) {
            setenv(name, value, 1);
        } else {
            unsetenv(name);
        }
    }
    ~env_guard() {
        for (auto & [n, v] : saved) setenv(n.c_str(), v.c_str(), 1);
        for (auto & n : unset) unsetenv(n.c_str());
    }
};

void kernel_plan() {
    auto plan = [](xglm_kernel_isa isa) {
        xglm_kernel_plan p;
        std::string      err;
        if (!xglm_kernel_plan_from_env(isa, isa == xglm_kernel_isa::avx512, &p, &err)) throw failure{err};
        return p;
    };
    auto all = [](const xglm_kernel_plan & p) { return p.attention && p.gemv_q4_0 && p.gemv_q8_0 && p.gemv_q6_k && p.gelu_bias; };
    auto none = [](const xglm_kernel_plan & p) {
        return !p.attention && !p.gemv_q4_0 && !p.gemv_q8_0 && !p.gemv_q6_k && !p.gelu_bias && !p.vnni && !p.gemv_k;
    };
    env_guard env;
    for (const char * n : {"XGLM_KERNELS", "XGLM_NO_CUSTOM_ATTN", "XGLM_NO_CUSTOM_GEMV"}) env.set(n, nullptr);
    for (auto isa : {xglm_kernel_isa::avx2, xglm_kernel_isa::avx512}) {
        const xglm_kernel_plan p = plan(isa);
        CHECK(all(p) && p.isa == isa, std::string("every op runs with ") + xglm_kernel_isa_name(isa));
    }
    CHECK(none(plan(xglm_kernel_isa::none)), "no op without AVX2 code");
    CHECK(plan(xglm_kernel_isa::none).gemv_off.find("no AVX2") != std::string::npos, "the plan says why: no AVX2 code");
    {
        // the description names every op the plan runs, and only those, as xglm-node's
        const xglm_kernel_plan p   = plan(xglm_kernel_isa::avx512);
        const auto             ops = xglm_kernel_plan_ops(p);
        int                    n   = 0;
        for (const auto & o : ops) n += o.ours;
        CHECK(n == 7 && ops.size() == 9 && ops[0].detail.find("VNNI") != std::string::npos && p.gemv_k,
              "the described plan: seven ops of ours (the K-quant layers with VNNI), VNNI products");
        // AVX2 only: no K-quant layer op (its kernels are VNNI)
        const xglm_kernel_plan p2 = plan(xglm_kernel_isa::avx2);
        n                         = 0;
        for (const auto & o : xglm_kernel_plan_ops(p2)) n += o.ours;
        CHECK(n == 6 && !p2.gemv_k, "the AVX2 plan: six ops of ours, no K-quant layer op");
        for (const auto & o : xglm_kernel_plan_ops(plan(xglm_kernel_isa::none))) {
            CHECK(!o.ours, "no op of ours described without AVX2 code: " + o.node);
        }
    }
    {
        xglm_kernel_plan p;
        std::string      err;
        CHECK(plan(xglm_kernel_isa::avx512).vnni, "VNNI products where the AVX-512 variant runs VNNI");
        CHECK(xglm_kernel_plan_from_env(xglm_kernel_isa::avx512, false, &p, &err) && !p.vnni, "no VNNI products on a variant without VNNI");
        CHECK(xglm_kernel_plan_from_env(xglm_kernel_isa::avx2, true, &p, &err) && !p.vnni, "VNNI products only with the AVX-512 code path");
    }
    setenv("XGLM_KERNELS", "auto", 1);
    CHECK(all(plan(xglm_kernel_isa::avx2)), "XGLM_KERNELS=auto is the default");
    setenv("XGLM_KERNELS", "ggml", 1);
    CHECK(none(plan(xglm_kernel_isa::avx512)), "XGLM_KERNELS=ggml turns every op off");
    CHECK(plan(xglm_kernel_isa::none).gemv_off == "XGLM_KERNELS=ggml", "XGLM_KERNELS=ggml is the reason given, whatever the variant");
    CHECK(plan(xglm_kernel_isa::avx512).isa == xglm_kernel_isa::avx512, "the plan still names the variant's code path");
    setenv("XGLM_KERNELS", "avx2", 1);
    {
        const xglm_kernel_plan p = plan(xglm_kernel_isa::avx512);
        CHECK(all(p) && !p.vnni && !p.gemv_k && p.isa == xglm_kernel_isa::avx512, "XGLM_KERNELS=avx2: every op, no VNNI products");
        CHECK(p.vnni_off == "XGLM_KERNELS=avx2", "XGLM_KERNELS=avx2 is the reason given");
    }
    setenv("XGLM_KERNELS", "fast", 1);
    {
        xglm_kernel_plan p;
        std::string      err;
        CHECK(!xglm_kernel_plan_from_env(xglm_kernel_isa::avx2, false, &p, &err) && err.find("XGLM_KERNELS=fast") != std::string::npos,
              "an unknown XGLM_KERNELS value is an error");
    }
    unsetenv("XGLM_KERNELS");
    setenv("XGLM_NO_CUSTOM_ATTN", "1", 1);
    {
        const xglm_kernel_plan p = plan(xglm_kernel_isa::avx2);
        CHECK(!p.attention && p.gemv_q4_0 && p.gemv_q6_k && p.gelu_bias, "XGLM_NO_CUSTOM_ATTN=1: only attention off");
    }
    setenv("XGLM_NO_CUSTOM_ATTN", "0", 1);
    CHECK(plan(xglm_kernel_isa::avx2).attention, "XGLM_NO_CUSTOM_ATTN=0 is off");
    setenv("XGLM_NO_CUSTOM_GEMV", "1", 1);
    {
        const xglm_kernel_plan p = plan(xglm_kernel_isa::avx2);
        CHECK(p.attention && !p.gemv_q4_0 && !p.gemv_q8_0 && !p.gemv_q6_k && !p.gelu_bias, "XGLM_NO_CUSTOM_GEMV=1: decode-gemv and GELU off");
        CHECK(!plan(xglm_kernel_isa::avx512).vnni, "XGLM_NO_CUSTOM_GEMV=1: no VNNI products either");
    }
    unsetenv("XGLM_NO_CUSTOM_GEMV");
    setenv("XGLM_LOG", "1", 1);
    CHECK(plan(xglm_kernel_isa::avx2).log, "XGLM_LOG sets log");
    unsetenv("XGLM_LOG");
    CHECK(!plan(xglm_kernel_isa::avx2).log, "no XGLM_LOG, no log");
    // backendInfo().kernels names the same code path the plan starts from
    const xglm_backend_info * b = xglm_backend_init(nullptr);
    CHECK(b && b->kernels == xglm_kernel_isa_name(xglm_backend_kernel_isa()), "backend info and plan agree on the ISA");
}

// ---------------------------------------------------------------------------------------
// the custom ops against ggml's nodes

// layer-norm.h: bit-identical to ggml's norm → mul → add in the variant's code path.
void op_layer_norm() {
    const xglm_kernel_plan plan = current_plan();
    for (int64_t n : {1024, 4096, 1000, 37}) {
        ggml_world     w(2);
        ggml_context * leaves = w.context();
        ggml_tensor *  x      = ggml_new_tensor_1d(leaves, GGML_TYPE_F32, n);
        ggml_tensor *  nw     = ggml_new_tensor_1d(leaves, GGML_TYPE_F32, n);
        ggml_tensor *  nb     = ggml_new_tensor_1d(leaves, GGML_TYPE_F32, n);
        w.alloc(leaves);
        const auto xv = random_floats(n, 10, 3.0f), wv = random_floats(n, 11), bv = random_floats(n, 12);
        set_f32(x, xv), set_f32(nw, wv), set_f32(nb, bv);
        ggml_context *           nodes = w.context();
        const std::vector<float> ref   = w.compute(nodes, ggml_layer_norm(nodes, x, nw, nb, 1e-5f));
        std::vector<float>       ours(n);
        xglm_layer_norm_row(xv.data(), wv.data(), bv.data(), 1e-5f, n, ours.data(), plan.isa);
        const size_t diff = count_bit_differences(ours, ref);
        CHECK(diff == 0, "n = " + std::to_string(n) + ": " + std::to_string(diff) + " values differ from ggml's norm → mul → add");
    }
}

// gelu.h: within the header's bound of libm's erff GELU.
void op_gelu_bias() {
    const int64_t  n = 4096, rows = 3;
    ggml_world     w(2);
    ggml_context * leaves = w.context();
    ggml_tensor *  x      = ggml_new_tensor_2d(leaves, GGML_TYPE_F32, n, rows);
    ggml_tensor *  b      = ggml_new_tensor_1d(leaves, GGML_TYPE_F32, n);
    w.alloc(leaves);
    const auto xv = random_floats(n * rows, 20, 3.0f), bv = random_floats(n, 21);
    set_f32(x, xv), set_f32(b, bv);
    CHECK(xglm_gelu_bias_usable(x, b), "the op takes these shapes");
    ggml_context *           nodes = w.context();
    const std::vector<float> ours  = w.compute(nodes, xglm_gelu_bias(nodes, x, b));
    // gelu.h / simd-math.h: erf within 1.5e-7, so GELU within ~2.5e-7·|x|/2, plus the float
    // rounding of the two formulas (a few units in the last place of the result)
    double worst = 0;
    for (int64_t i = 0; i < n * rows; ++i) {
        const float a     = xv[i] + bv[i % n];
        const float ref   = gelu_erff(a);
        const float bound = 2.5e-7f * std::fabs(a) / 2 + 4 * std::numeric_limits<float>::epsilon() * std::fabs(ref) + 1e-30f;
        const float err   = std::fabs(ours[i] - ref);
        worst             = std::max(worst, static_cast<double>(err / bound));
        CHECK(err <= bound, "GELU(" + fmt("%.9g", a) + ") = " + fmt("%.9g, erff reference %.9g", ours[i], ref));
    }
    g_note = fmt("worst |ours - erff GELU| at %.0f%% of the bound", 100 * worst);
}

// A Q-type weight [n_in, n_out] from random floats (ggml's own quantizer).
std::vector<uint8_t> quantized(ggml_type type, int64_t n_in, int64_t n_out, uint32_t seed) {
    const std::vector<float> f = random_floats(n_in * n_out, seed, 0.05f);
    std::vector<uint8_t>     q(ggml_row_size(type, n_in) * n_out);
    ggml_quantize_chunk(type, f.data(), q.data(), 0, n_out, n_in, nullptr);
    return q;
}

// Why the K-quant layer kernels (VNNI only) do not run here, or "".
std::string k_quant_skip_reason() {
    const xglm_kernel_plan p = current_plan();
    std::string            r = op_skip_reason(p.gemv_q4_0, "decode-gemv");
    if (r.empty() && !p.gemv_k) r = no_vnni_reason;
    return r;
}

// The op with the GELU folded in (fuse.gelu) against gelu_erff of `base` (w·x + b, as the
// plain op or mul_mat made it), within the erf polynomial's bound (op_gelu_bias).
void check_folded_gelu(ggml_world & w, ggml_tensor * wt, ggml_tensor * x, ggml_tensor * b, xglm_gemv_fuse gelu,
                       const std::vector<float> & base, const std::string & at) {
    gelu.gelu         = true;
    ggml_context * m  = w.context();
    const auto     og = w.compute(m, xglm_decode_gemv(m, wt, x, b, gelu));
    for (size_t i = 0; i < base.size(); ++i) {
        const float r     = gelu_erff(base[i]);
        const float bound = 2.5e-7f * std::fabs(base[i]) / 2 + 4 * std::numeric_limits<float>::epsilon() * std::fabs(r) + 1e-30f;
        CHECK(std::fabs(og[i] - r) <= bound, at + "GELU(w·x + b) value " + std::to_string(i) + " outside the erf bound");
    }
}

// The options of a plain product through the VNNI kernels.
xglm_gemv_fuse gemv_fuse_vnni() {
    xglm_gemv_fuse f;
    f.vnni = true;
    return f;
}

// The column counts the decode-gemv tests take: one token, the tiles of both kernels (4, 8) and
// their remainders, the 64-column blocks and a remainder past them.
constexpr int64_t gemv_col_counts[] = {1, 2, 3, 4, 5, 8, 9, 16, 64, 67, 130};

// decode-gemv.h, Q6_K in plain rows: bit-identical to ggml_mul_mat (+ bias; + the folded norm),
// for every column count; `vnni`: through the AVX-512 VNNI kernels (op_decode_gemv_q6_k_vnni).
void decode_gemv_q6_k(bool vnni) {
    const xglm_kernel_plan plan = current_plan();
    const int64_t n_in = 1024, n_out = 1000;
    for (int threads : {1, 2}) {
        for (int64_t n_cols : gemv_col_counts) {
            ggml_world     w(threads);
            ggml_context * leaves = w.context();
            ggml_tensor *  wt     = ggml_new_tensor_2d(leaves, GGML_TYPE_Q6_K, n_in, n_out);
            ggml_tensor *  x      = ggml_new_tensor_2d(leaves, GGML_TYPE_F32, n_in, n_cols);
            ggml_tensor *  b      = ggml_new_tensor_1d(leaves, GGML_TYPE_F32, n_out);
            ggml_tensor *  nw     = ggml_new_tensor_1d(leaves, GGML_TYPE_F32, n_in);
            ggml_tensor *  nb     = ggml_new_tensor_1d(leaves, GGML_TYPE_F32, n_in);
            w.alloc(leaves);
            const auto q = quantized(GGML_TYPE_Q6_K, n_in, n_out, 30);
            ggml_backend_tensor_set(wt, q.data(), 0, q.size());
            set_f32(x, random_floats(n_in * n_cols, 31)), set_f32(b, random_floats(n_out, 32)), set_f32(nw, random_floats(n_in, 33));
            set_f32(nb, random_floats(n_in, 34));
            const std::string at = std::to_string(threads) + " thread(s), " + std::to_string(n_cols) + " column(s), " +
                                   (vnni ? "VNNI" : "AVX2") + ": ";
            CHECK(xglm_decode_gemv_usable(wt, x, b), at + "the op takes a plain Q6_K weight");

            xglm_gemv_fuse plain;
            plain.vnni           = vnni;
            ggml_context * nodes = w.context();
            const auto     ref   = w.compute(nodes, ggml_add(nodes, ggml_mul_mat(nodes, wt, x), b));
            const auto     ours  = w.compute(nodes, xglm_decode_gemv(nodes, wt, x, b, plain));
            CHECK(count_bit_differences(ours, ref) == 0, at + "w·x + b differs from mul_mat + add");

            xglm_gemv_fuse f = plain;
            f.norm_w = nw, f.norm_b = nb, f.norm_eps = 1e-5f, f.norm_isa = plan.isa;
            ggml_context * nodes2 = w.context();
            const auto ref_n  = w.compute(nodes2, ggml_mul_mat(nodes2, wt, ggml_layer_norm(nodes2, x, nw, nb, 1e-5f)));
            const auto ours_n = w.compute(nodes2, xglm_decode_gemv(nodes2, wt, x, nullptr, f));
            CHECK(count_bit_differences(ours_n, ref_n) == 0, at + "w·LN(x) differs from norm → mul → add → mul_mat");
        }
    }
}
void op_decode_gemv_q6_k() { decode_gemv_q6_k(false); }
void op_decode_gemv_q6_k_vnni() { decode_gemv_q6_k(true); }

// The CPU_REPACK buffer type, where ggml rearranges Q4_0 weights for its AVX2 gemv.
ggml_backend_buffer_type_t repack_buffer_type() {
    using extra_bufts_t = ggml_backend_buffer_type_t * (*) (ggml_backend_dev_t);
    auto get = reinterpret_cast<extra_bufts_t>(xglm_cpu_proc("ggml_backend_dev_get_extra_bufts"));
    for (ggml_backend_buffer_type_t * e = get ? get(xglm_cpu_device()) : nullptr; e && *e; ++e) {
        if (std::strcmp(ggml_backend_buft_name(*e), "CPU_REPACK") == 0) return *e;
    }
    return nullptr;
}

// decode-gemv.h with a layer weight of `type` (Q4_0 in ggml's repacked layout, or Q8_0 in plain
// rows): bit-identical to ggml_mul_mat on the same weight for the product, the bias, the folded
// norm and the residual; the folded GELU within the erf bound of op_gelu_bias. `vnni`: through
// the AVX-512 VNNI kernels (the *_vnni cases) instead of the AVX2 ones.
void decode_gemv_layer(ggml_type type, bool vnni) {
    const xglm_kernel_plan plan = current_plan();
    ggml_backend_buffer_type_t buft = type == GGML_TYPE_Q4_0 ? repack_buffer_type() : nullptr;
    const int64_t n_in = 1024, n_out = 512;
    for (int threads : {1, 2}) {
        for (int64_t n_cols : gemv_col_counts) {
            ggml_world     w(threads);
            ggml_context * wctx = w.context(4);
            ggml_tensor *  wt   = ggml_new_tensor_2d(wctx, type, n_in, n_out);
            w.alloc(wctx, buft);
            const auto q = quantized(type, n_in, n_out, 40);
            ggml_backend_tensor_set(wt, q.data(), 0, q.size());  // ggml repacks Q4_0 while setting
            ggml_context * leaves = w.context();
            ggml_tensor *  x      = ggml_new_tensor_2d(leaves, GGML_TYPE_F32, n_in, n_cols);
            ggml_tensor *  b      = ggml_new_tensor_1d(leaves, GGML_TYPE_F32, n_out);
            ggml_tensor *  nw     = ggml_new_tensor_1d(leaves, GGML_TYPE_F32, n_in);
            ggml_tensor *  nb     = ggml_new_tensor_1d(leaves, GGML_TYPE_F32, n_in);
            ggml_tensor *  res    = ggml_new_tensor_2d(leaves, GGML_TYPE_F32, n_out, n_cols);
            w.alloc(leaves);
            set_f32(x, random_floats(n_in * n_cols, 41)), set_f32(b, random_floats(n_out, 42)), set_f32(nw, random_floats(n_in, 43));
            set_f32(nb, random_floats(n_in, 44)), set_f32(res, random_floats(n_out * n_cols, 45));
            if (!xglm_decode_gemv_usable(wt, x, b)) {
                if (type == GGML_TYPE_Q4_0) throw skipped{"ggml did not repack this Q4_0 weight into 8-row groups here"};
                throw failure{"the op does not take a plain Q8_0 weight"};
            }

            ggml_context * n1     = w.context();
            const auto     ref    = w.compute(n1, ggml_add(n1, ggml_mul_mat(n1, wt, x), b));
            ggml_context * n2     = w.context();
            const auto     ref_n  = w.compute(n2, ggml_add(n2, ggml_mul_mat(n2, wt, ggml_layer_norm(n2, x, nw, nb, 1e-5f)), b));
            ggml_context * n3     = w.context();
            const auto     ref_r  = w.compute(n3, ggml_add(n3, ggml_add(n3, ggml_mul_mat(n3, wt, x), b), res));
            {
                const std::string at = std::to_string(threads) + " thread(s), " + std::to_string(n_cols) + " column(s), " +
                                       (vnni ? "VNNI" : "AVX2") + ": ";
                xglm_gemv_fuse plain;
                plain.vnni     = vnni;
                ggml_context * m1 = w.context();
                CHECK(count_bit_differences(w.compute(m1, xglm_decode_gemv(m1, wt, x, b, plain)), ref) == 0, at + "w·x + b differs from mul_mat + add");

                xglm_gemv_fuse norm = plain;
                norm.norm_w = nw, norm.norm_b = nb, norm.norm_eps = 1e-5f, norm.norm_isa = plan.isa;
                ggml_context * m2 = w.context();
                CHECK(count_bit_differences(w.compute(m2, xglm_decode_gemv(m2, wt, x, b, norm)), ref_n) == 0, at + "w·LN(x) + b differs from ggml's nodes");

                xglm_gemv_fuse residual = plain;
                residual.residual       = res;
                ggml_context * m3       = w.context();
                CHECK(count_bit_differences(w.compute(m3, xglm_decode_gemv(m3, wt, x, b, residual)), ref_r) == 0, at + "w·x + b + r differs from ggml's nodes");

                check_folded_gelu(w, wt, x, b, plain, ref, at);
            }
        }
    }
}
void op_decode_gemv_q4_0() { decode_gemv_layer(GGML_TYPE_Q4_0, false); }
void op_decode_gemv_q4_0_vnni() { decode_gemv_layer(GGML_TYPE_Q4_0, true); }
void op_decode_gemv_q8_0() { decode_gemv_layer(GGML_TYPE_Q8_0, false); }

// ggml's reference Q8_K quantizer (ggml-base), as the Q4_K kernel quantizes its columns.
extern "C" void quantize_row_q8_K_ref(const float * x, void * y, int64_t k);

// decode-gemv.h over Q4_K weights as ggml's CPU_REPACK buffer rearranges them (block_q4_Kx8; the
// AVX-512 VNNI kernel). Against the exact value of the same integers in double precision (the
// Q4_K blocks decoded here, the column quantized by ggml's Q8_K quantizer): within (2·nbk + 4)
// units of 2^-24 of S = Σ over super-blocks of |d_y·d·Σ scale·Σ q·y| + |d_y·dmin·Σ min·Σ y|, the
// sum of |terms| the float steps add (nbk: super-blocks per row). Against ggml_mul_mat on the same
// weight within twice that (its repacked kernels add in another order). Then the column alone,
// the bias, GELU and residual folds as for the other layouts.
void op_decode_gemv_q4_k() {
    ggml_backend_buffer_type_t buft = repack_buffer_type();
    if (!buft) throw skipped{"this ggml CPU backend has no CPU_REPACK buffer (the op takes only repacked Q4_K)"};
    const int64_t n_in = 1024, n_out = 512, nbk = n_in / 256;
    const auto    q = quantized(GGML_TYPE_Q4_K, n_in, n_out, 50);
    constexpr double u = 1.0 / (1 << 24);
    // the plain blocks' fields (ggml-common.h block_q4_K: d, dmin, scales[12], qs[128])
    auto field = [&](int64_t r, int64_t blk) { return q.data() + (r * nbk + blk) * 144; };
    auto scale_min = [](const uint8_t * sc, int j, int & d, int & m) {
        if (j < 4) {
            d = sc[j] & 63, m = sc[j + 4] & 63;
        } else {
            d = (sc[j + 4] & 0xF) | ((sc[j - 4] >> 6) << 4), m = (sc[j + 4] >> 4) | ((sc[j] >> 6) << 4);
        }
    };
    for (int threads : {1, 2}) {
        for (int64_t n_cols : gemv_col_counts) {
            ggml_world     w(threads);
            ggml_context * wctx = w.context(4);
            ggml_tensor *  wt   = ggml_new_tensor_2d(wctx, GGML_TYPE_Q4_K, n_in, n_out);
            w.alloc(wctx, buft);
            ggml_backend_tensor_set(wt, q.data(), 0, q.size());  // ggml repacks while setting
            ggml_context * leaves = w.context();
            ggml_tensor *  x      = ggml_new_tensor_2d(leaves, GGML_TYPE_F32, n_in, n_cols);
            ggml_tensor *  b      = ggml_new_tensor_1d(leaves, GGML_TYPE_F32, n_out);
            ggml_tensor *  res    = ggml_new_tensor_2d(leaves, GGML_TYPE_F32, n_out, n_cols);
            ggml_tensor *  x1     = ggml_new_tensor_2d(leaves, GGML_TYPE_F32, n_in, 1);
            w.alloc(leaves);
            const std::vector<float> xs = random_floats(n_in * n_cols, 51);
            set_f32(x, xs), set_f32(b, random_floats(n_out, 52)), set_f32(res, random_floats(n_out * n_cols, 53));
            if (!xglm_decode_gemv_usable(wt, x, b)) throw skipped{"ggml did not repack this Q4_K weight into 8-row groups here"};
            const std::string at = std::to_string(threads) + " thread(s), " + std::to_string(n_cols) + " column(s): ";
            xglm_gemv_fuse plain;
            plain.vnni = true;

            ggml_context * n1   = w.context();
            const auto     ref  = w.compute(n1, ggml_add(n1, ggml_mul_mat(n1, wt, x), b));
            ggml_context * m1   = w.context();
            const auto     ours = w.compute(m1, xglm_decode_gemv(m1, wt, x, b, plain));
            std::vector<float> bias = random_floats(n_out, 52);
            for (int64_t c = 0; c < n_cols; ++c) {
                struct q8k { float d; int8_t qs[256]; int16_t bsums[16]; };
                std::vector<q8k> yq(nbk);
                quantize_row_q8_K_ref(xs.data() + c * n_in, yq.data(), n_in);
                for (int64_t r = 0; r < n_out; ++r) {
                    double exact = 0, terms = 0;
                    for (int64_t blk = 0; blk < nbk; ++blk) {
                        const uint8_t * f = field(r, blk);
                        uint16_t        dh, mh;
                        std::memcpy(&dh, f, 2), std::memcpy(&mh, f + 2, 2);
                        long sumi = 0, summ = 0;
                        for (int j = 0; j < 8; ++j) {
                            int sc, m;
                            scale_min(f + 4, j, sc, m);
                            long dot = 0, ysum = 0;
                            for (int l = 0; l < 32; ++l) {
                                const int qv = (f[16 + 32 * (j / 2) + l] >> (4 * (j % 2))) & 15;
                                dot += qv * yq[blk].qs[32 * j + l];
                                ysum += yq[blk].qs[32 * j + l];
                            }
                            sumi += sc * dot, summ += m * ysum;
                        }
                        const double dd = double(yq[blk].d) * ggml_fp16_to_fp32(dh), dm = double(yq[blk].d) * ggml_fp16_to_fp32(mh);
                        exact += dd * sumi - dm * summ;
                        terms += std::fabs(dd * sumi) + std::fabs(dm * summ);
                    }
                    const size_t i     = c * n_out + r;
                    const double want  = exact + bias[r];
                    const double bound = (2.0 * nbk + 4) * u * terms + 2 * u * std::fabs(want);
                    CHECK(std::fabs(ours[i] - want) <= bound, at + "row " + std::to_string(r) + " column " + std::to_string(c) + ": " +
                                                                   std::to_string(ours[i]) + " vs the exact " + std::to_string(want) +
                                                                   ", beyond the rounding bound " + std::to_string(bound));
                    CHECK(std::fabs(ours[i] - ref[i]) <= 2 * bound, at + "row " + std::to_string(r) + " column " + std::to_string(c) + ": " +
                                                                         std::to_string(ours[i]) + " vs mul_mat's " + std::to_string(ref[i]) +
                                                                         ", beyond twice the rounding bound " + std::to_string(bound));
                }
            }
            if (n_cols > 1) {  // each column as if alone: the last one
                set_f32(x1, std::vector<float>(xs.end() - n_in, xs.end()));
                ggml_context * m0    = w.context();
                const auto     alone = w.compute(m0, xglm_decode_gemv(m0, wt, x1, b, plain));
                CHECK(count_bit_differences(alone, std::vector<float>(ours.end() - n_out, ours.end())) == 0,
                      at + "the last column differs from its product alone");
            }
            xglm_gemv_fuse residual = plain;
            residual.residual       = res;
            ggml_context * n3       = w.context();
            const auto     ref_r    = w.compute(n3, ggml_add(n3, xglm_decode_gemv(n3, wt, x, b, plain), res));
            ggml_context * m3       = w.context();
            CHECK(count_bit_differences(w.compute(m3, xglm_decode_gemv(m3, wt, x, b, residual)), ref_r) == 0,
                  at + "w·x + b + r differs from the op then ggml's add");
            check_folded_gelu(w, wt, x, b, plain, ours, at);
        }
    }
}

// decode-gemv.h over the K-quant layer weights of q4_k_m files in plain rows (Q5_K, Q6_K; the
// AVX-512 VNNI kernels): bit-identical to ggml_mul_mat + add for the product and bias (the same
// integers and float steps as ggml's vec_dot per row and column), to the op then ggml's add for
// the folded residual; the folded GELU within the erf bound.
void decode_gemv_k_rows(ggml_type type) {
    const int64_t n_in = 1024, n_out = 512;
    const auto    q    = quantized(type, n_in, n_out, 60);
    for (int threads : {1, 2}) {
        for (int64_t n_cols : gemv_col_counts) {
            ggml_world     w(threads);
            ggml_context * wctx = w.context(4);
            ggml_tensor *  wt   = ggml_new_tensor_2d(wctx, type, n_in, n_out);
            w.alloc(wctx);
            ggml_backend_tensor_set(wt, q.data(), 0, q.size());
            ggml_context * leaves = w.context();
            ggml_tensor *  x      = ggml_new_tensor_2d(leaves, GGML_TYPE_F32, n_in, n_cols);
            ggml_tensor *  b      = ggml_new_tensor_1d(leaves, GGML_TYPE_F32, n_out);
            ggml_tensor *  res    = ggml_new_tensor_2d(leaves, GGML_TYPE_F32, n_out, n_cols);
            w.alloc(leaves);
            set_f32(x, random_floats(n_in * n_cols, 61)), set_f32(b, random_floats(n_out, 62)), set_f32(res, random_floats(n_out * n_cols, 63));
            CHECK(xglm_decode_gemv_usable(wt, x, b), std::string("the op does not take a plain ") + ggml_type_name(type) + " weight");
            const std::string at = std::to_string(threads) + " thread(s), " + std::to_string(n_cols) + " column(s): ";
            xglm_gemv_fuse plain;
            plain.vnni = true;
            ggml_context * n1   = w.context();
            const auto     ref  = w.compute(n1, ggml_add(n1, ggml_mul_mat(n1, wt, x), b));
            ggml_context * m1   = w.context();
            const auto     ours = w.compute(m1, xglm_decode_gemv(m1, wt, x, b, plain));
            CHECK(count_bit_differences(ours, ref) == 0, at + "w·x + b differs from mul_mat + add");
            xglm_gemv_fuse residual = plain;
            residual.residual       = res;
            ggml_context * n3       = w.context();
            const auto     ref_r    = w.compute(n3, ggml_add(n3, ggml_add(n3, ggml_mul_mat(n3, wt, x), b), res));
            ggml_context * m3       = w.context();
            CHECK(count_bit_differences(w.compute(m3, xglm_decode_gemv(m3, wt, x, b, residual)), ref_r) == 0,
                  at + "w·x + b + r differs from ggml's nodes");
            check_folded_gelu(w, wt, x, b, plain, ref, at);
        }
    }
}
void op_decode_gemv_q5_k() { decode_gemv_k_rows(GGML_TYPE_Q5_K); }
void op_decode_gemv_q6_k_layer() { decode_gemv_k_rows(GGML_TYPE_Q6_K); }

// xglm_quantize_q8_K against ggml's quantize_row_q8_K_ref, bit for bit (the K-quant kernels'
// columns must be mul_mat's): random blocks at several scales, and the edges of its scan and
// rounding: an all-zero block, the largest magnitude twice with both signs (the first wins, its
// sign sets the scale's), values on .5 after scaling, a NaN, an infinity.
void op_quantize_q8_K() {
    std::vector<float> x = random_floats(256 * 16, 70);
    for (int i = 0; i < 256; ++i) x[256 * 1 + i] *= 1e-30f, x[256 * 2 + i] *= 1e20f;
    for (int i = 0; i < 256; ++i) x[256 * 3 + i] = 0.0f;
    x[256 * 4 + 10] = -5.0f, x[256 * 4 + 200] = 5.0f;
    x[256 * 5 + 3] = 5.0f, x[256 * 5 + 100] = -5.0f;
    for (int i = 0; i < 256; ++i) x[256 * 6 + i] = (i % 255 - 127) * 0.5f;  // many halves after × −127/max
    x[256 * 6 + 7] = 127.0f;
    x[256 * 7 + 9] = std::numeric_limits<float>::quiet_NaN();
    x[256 * 8 + 9] = std::numeric_limits<float>::infinity();
    for (int i = 0; i < 256; ++i) x[256 * 9 + i] = std::numeric_limits<float>::quiet_NaN();
    std::vector<uint8_t> ours(292 * 16), ref(292 * 16);
    xglm_quantize_q8_K(x.data(), ours.data(), static_cast<int64_t>(x.size()));
    quantize_row_q8_K_ref(x.data(), ref.data(), static_cast<int64_t>(x.size()));
    for (int b = 0; b < 16; ++b) {
        CHECK(std::memcmp(ours.data() + 292 * b, ref.data() + 292 * b, 292) == 0, "block " + std::to_string(b) + " differs from ggml's");
    }
}

// decode-gemv.h over Q8_0 weights in our 8-row layout (xglm_repack_q8_0x8, the AVX-512 VNNI
// kernel). It makes ggml's integers per block but adds the float products in the order of ggml's
// repacked kernels, not of its plain Q8_0 ones, so against ggml_mul_mat on the plain rows it is
// checked within the rounding of both sums: (2·nb + 8) units of 2^-24 of Σ_b |d_w|·Σ_k |w_k|·
// (|x_k| + d_x), a bound on the sum of |terms| (d_x: the column block's quant step; a wrong row,
// block or offset misses it by orders of magnitude). Then exactly: each column equals the same
// column computed alone; the folded norm equals the op on ggml's normed input, the residual the op
// plus ggml's add, bit for bit; the GELU within the erf bound.
void op_decode_gemv_q8_0x8() {
    const xglm_kernel_plan plan = current_plan();
    const int64_t          n_in = 1024, n_out = 512, nb = n_in / 32;
    const auto             q = quantized(GGML_TYPE_Q8_0, n_in, n_out, 40);
    std::vector<uint8_t>   packed(q.size());
    xglm_repack_q8_0x8(q.data(), packed.data(), n_in, n_out);
    constexpr float u = 1.0f / (1 << 24);
    for (int threads : {1, 2}) {
        for (int64_t n_cols : gemv_col_counts) {
            ggml_world     w(threads);
            ggml_context * wctx  = w.context(4);
            ggml_tensor *  plain = ggml_new_tensor_2d(wctx, GGML_TYPE_Q8_0, n_in, n_out);
            ggml_tensor *  wt    = ggml_new_tensor_2d(wctx, GGML_TYPE_Q8_0, n_in, n_out);
            w.alloc(wctx);
            CHECK(xglm_q8_0x8_possible(wt), "a plain 512-row Q8_0 weight cannot be rearranged");
            ggml_backend_tensor_set(plain, q.data(), 0, q.size());
            ggml_backend_tensor_set(wt, packed.data(), 0, packed.size());
            xglm_mark_q8_0x8(wt);
            CHECK(!xglm_q8_0x8_possible(wt) && xglm_is_q8_0x8(wt) && !xglm_is_q8_0x8(plain), "the layout mark");
            ggml_context * leaves = w.context();
            ggml_tensor *  x      = ggml_new_tensor_2d(leaves, GGML_TYPE_F32, n_in, n_cols);
            ggml_tensor *  b      = ggml_new_tensor_1d(leaves, GGML_TYPE_F32, n_out);
            ggml_tensor *  nw     = ggml_new_tensor_1d(leaves, GGML_TYPE_F32, n_in);
            ggml_tensor *  nbias  = ggml_new_tensor_1d(leaves, GGML_TYPE_F32, n_in);
            ggml_tensor *  res    = ggml_new_tensor_2d(leaves, GGML_TYPE_F32, n_out, n_cols);
            ggml_tensor *  x1     = ggml_new_tensor_2d(leaves, GGML_TYPE_F32, n_in, 1);
            w.alloc(leaves);
            const std::vector<float> xs = random_floats(n_in * n_cols, 41);
            set_f32(x, xs), set_f32(b, random_floats(n_out, 42)), set_f32(nw, random_floats(n_in, 43));
            set_f32(nbias, random_floats(n_in, 44)), set_f32(res, random_floats(n_out * n_cols, 45));
            CHECK(xglm_decode_gemv_usable(wt, x, b), "the op does not take a Q8_0 weight in its 8-row layout");
            const std::string at = std::to_string(threads) + " thread(s), " + std::to_string(n_cols) + " column(s): ";

            ggml_context * n1   = w.context();
            const auto     ref  = w.compute(n1, ggml_add(n1, ggml_mul_mat(n1, plain, x), b));
            ggml_context * m1   = w.context();
            const auto     ours = w.compute(m1, xglm_decode_gemv(m1, wt, x, b, gemv_fuse_vnni()));
            for (int64_t c = 0; c < n_cols; ++c) {
                const float * xc = xs.data() + c * n_in;
                for (int64_t r = 0; r < n_out; ++r) {
                    double sum_abs = 0;  // Σ over blocks of |d_w|·Σ_k |w_k|·(|x_k| + d_x)
                    for (int64_t blk = 0; blk < nb; ++blk) {
                        const uint8_t * wb   = q.data() + (r * nb + blk) * 34;
                        uint16_t        dh;
                        std::memcpy(&dh, wb, 2);
                        float amax = 0;
                        for (int k = 0; k < 32; ++k) amax = std::max(amax, std::fabs(xc[32 * blk + k]));
                        double part = 0;
                        for (int k = 0; k < 32; ++k) part += std::abs(static_cast<int8_t>(wb[2 + k])) * (std::fabs(xc[32 * blk + k]) + amax / 127.0);
                        sum_abs += std::fabs(ggml_fp16_to_fp32(dh)) * part;
                    }
                    const size_t i     = c * n_out + r;
                    const double bound = (2.0 * nb + 8) * u * sum_abs + 2 * u * (std::fabs(ours[i]) + std::fabs(ref[i]));
                    CHECK(std::fabs(double(ours[i]) - ref[i]) <= bound,
                          at + "row " + std::to_string(r) + " column " + std::to_string(c) + ": " + std::to_string(ours[i]) + " vs mul_mat's " +
                              std::to_string(ref[i]) + ", beyond the rounding bound " + std::to_string(bound));
                }
            }
            if (n_cols > 1) {  // each column as if alone: the last one
                set_f32(x1, std::vector<float>(xs.end() - n_in, xs.end()));
                ggml_context * m0    = w.context();
                const auto     alone = w.compute(m0, xglm_decode_gemv(m0, wt, x1, b, gemv_fuse_vnni()));
                CHECK(count_bit_differences(alone, std::vector<float>(ours.end() - n_out, ours.end())) == 0,
                      at + "the last column differs from its product alone");
            }

            xglm_gemv_fuse norm = gemv_fuse_vnni();
            norm.norm_w = nw, norm.norm_b = nbias, norm.norm_eps = 1e-5f, norm.norm_isa = plan.isa;
            ggml_context * n2 = w.context();
            const auto ref_n  = w.compute(n2, xglm_decode_gemv(n2, wt, ggml_layer_norm(n2, x, nw, nbias, 1e-5f), b, gemv_fuse_vnni()));
            ggml_context * m2 = w.context();
            CHECK(count_bit_differences(w.compute(m2, xglm_decode_gemv(m2, wt, x, b, norm)), ref_n) == 0,
                  at + "the folded norm differs from the op on ggml's norm → mul → add");

            xglm_gemv_fuse residual = gemv_fuse_vnni();
            residual.residual       = res;
            ggml_context * n3       = w.context();
            const auto ref_r = w.compute(n3, ggml_add(n3, xglm_decode_gemv(n3, wt, x, b, gemv_fuse_vnni()), res));
            ggml_context * m3 = w.context();
            CHECK(count_bit_differences(w.compute(m3, xglm_decode_gemv(m3, wt, x, b, residual)), ref_r) == 0,
                  at + "w·x + b + r differs from the op then ggml's add");

            check_folded_gelu(w, wt, x, b, gemv_fuse_vnni(), ours, at);
        }
    }
}

// attention.h: against softmax(q·kᵀ·scale + mask)·v in double precision from the same F16
// cache, and against ggml_flash_attn_ext within what F16 rounding allows it.
void op_attention() {
    for (int64_t d : {64, 128}) {
        for (int64_t n_tokens : {1, 5}) {
            const int64_t n_head = 4, n_kv = 256, n_visible = 200;
            ggml_world     w(2);
            ggml_context * leaves = w.context();
            ggml_tensor *  q      = ggml_new_tensor_3d(leaves, GGML_TYPE_F32, d, n_tokens, n_head);
            ggml_tensor *  k      = ggml_new_tensor_3d(leaves, GGML_TYPE_F16, d, n_kv, n_head);
            ggml_tensor *  v      = ggml_new_tensor_3d(leaves, GGML_TYPE_F16, d, n_kv, n_head);
            ggml_tensor *  mask   = ggml_new_tensor_2d(leaves, GGML_TYPE_F16, n_kv, n_tokens);
            w.alloc(leaves);
            const auto qv = random_floats(d * n_tokens * n_head, 50), kf = random_floats(d * n_kv * n_head, 51),
                       vf = random_floats(d * n_kv * n_head, 52);
            std::vector<ggml_fp16_t> kh(kf.size()), vh(vf.size());
            std::vector<float>       kr(kf.size()), vr(vf.size());  // the F16 values as floats
            for (size_t i = 0; i < kf.size(); ++i) {
                kh[i] = ggml_fp32_to_fp16(kf[i]), kr[i] = ggml_fp16_to_fp32(kh[i]);
                vh[i] = ggml_fp32_to_fp16(vf[i]), vr[i] = ggml_fp16_to_fp32(vh[i]);
            }
            // causal over the visible cells, every third cell masked out as another sequence's
            std::vector<ggml_fp16_t> mh(n_kv * n_tokens);
            for (int64_t t = 0; t < n_tokens; ++t) {
                for (int64_t c = 0; c < n_kv; ++c) {
                    const bool visible = c < n_visible - n_tokens + 1 + t && c % 3 != 1;
                    mh[t * n_kv + c]   = ggml_fp32_to_fp16(visible ? 0.0f : -INFINITY);
                }
            }
            set_f32(q, qv);
            ggml_backend_tensor_set(k, kh.data(), 0, kh.size() * 2);
            ggml_backend_tensor_set(v, vh.data(), 0, vh.size() * 2);
            ggml_backend_tensor_set(mask, mh.data(), 0, mh.size() * 2);
            const float scale = 1.0f / std::sqrt(static_cast<float>(d));
            double      max_v = 0;
            for (float x : vr) max_v = std::max(max_v, static_cast<double>(std::fabs(x)));
            CHECK(xglm_attention_usable(q, k, v, mask), "the op takes these shapes");

            ggml_context * nodes = w.context();
            const auto     ours  = w.compute(nodes, xglm_attention(nodes, q, k, v, mask, scale));
            ggml_tensor *  fa    = ggml_flash_attn_ext(nodes, q, k, v, mask, scale, 0.0f, 0.0f);
            ggml_flash_attn_ext_set_prec(fa, GGML_PREC_F32);
            const auto ggml = w.compute(nodes, fa);

            // output [d, n_head, n_tokens]
            double worst_bound = 0;  // of |ggml - ours| / its bound
            double worst_ref = 0, worst_ggml = 0;
            for (int64_t t = 0; t < n_tokens; ++t) {
                for (int64_t h = 0; h < n_head; ++h) {
                    const float *       qr = qv.data() + (h * n_tokens + t) * d;
                    std::vector<double> s(n_kv, -INFINITY);
                    double              max = -INFINITY, sum_abs_qk = 0;
                    for (int64_t c = 0; c < n_kv; ++c) {
                        if (std::isinf(ggml_fp16_to_fp32(mh[t * n_kv + c]))) continue;
                        double dot = 0, dot_abs = 0;
                        for (int64_t i = 0; i < d; ++i) {
                            dot += static_cast<double>(qr[i]) * kr[(h * n_kv + c) * d + i];
                            dot_abs += std::fabs(static_cast<double>(qr[i]) * kr[(h * n_kv + c) * d + i]);
                        }
                        s[c]       = dot * scale;
                        max        = std::max(max, s[c]);
                        sum_abs_qk = std::max(sum_abs_qk, dot_abs * scale);
                    }
                    double z = 0;
                    for (int64_t c = 0; c < n_kv; ++c) z += std::isinf(s[c]) ? 0 : std::exp(s[c] - max);
                    // With F16's unit roundoff u, ggml's flash attention rounds Q to F16 (each
                    // score off by ≤ u·Σ|q·k|·scale, so each softmax weight by a factor within
                    // exp(±2u·Σ|q·k|·scale)) and accumulates V in F16 (≈ u·√n relative to the
                    // largest |v| over n visible cells, for rounding errors of random sign).
                    const double u     = 1.0 / 2048;
                    const double bound = max_v * (std::expm1(2 * u * sum_abs_qk) + 4 * u * std::sqrt(static_cast<double>(n_visible))) + 1e-6;
                    for (int64_t i = 0; i < d; ++i) {
                        double ref = 0;
                        for (int64_t c = 0; c < n_kv; ++c) {
                            if (!std::isinf(s[c])) ref += std::exp(s[c] - max) / z * vr[(h * n_kv + c) * d + i];
                        }
                        const size_t o  = (t * n_head + h) * d + i;
                        const double e1 = std::fabs(ours[o] - ref), e2 = std::fabs(ggml[o] - ours[o]);
                        worst_ref       = std::max(worst_ref, e1);
                        worst_ggml      = std::max(worst_ggml, e2);
                        worst_bound     = std::max(worst_bound, e2 / bound);
                        CHECK(e1 <= 2e-5, "d " + std::to_string(d) + ", " + std::to_string(n_tokens) + " token(s): " +
                                              fmt("%.3g off the double reference (allowed 2e-5)", e1));
                        CHECK(e2 <= bound, "d " + std::to_string(d) + ", " + std::to_string(n_tokens) + " token(s): " +
                                               fmt("%.3g off flash_attn_ext, more than F16 rounding allows (%.3g)", e2, bound));
                    }
                }
            }
            g_note += (g_note.empty() ? "" : "; ") + std::string("d ") + std::to_string(d) + "/" + std::to_string(n_tokens) + " tok: " +
                      fmt("ours-double %.2g, ggml-ours %.2g (%.0f%% of the F16 bound)", worst_ref, worst_ggml, 100 * worst_bound);
        }
    }
}

// attention.h's storing form (one token): writing the token's K and V into its cell itself gives
// the same cache bytes as ggml's set_rows and the same result as set_rows then the op.
void op_attention_store() {
    const int64_t d = 64, n_head = 4, n_embd = d * n_head, n_kv = 256;
    const int64_t cell = 100;  // where the token goes; cells [0, cell] are visible to it
    ggml_world     w(2);
    ggml_context * leaves = w.context();
    ggml_tensor *  q      = ggml_new_tensor_3d(leaves, GGML_TYPE_F32, d, 1, n_head);
    ggml_tensor *  k_cur  = ggml_new_tensor_2d(leaves, GGML_TYPE_F32, n_embd, 1);
    ggml_tensor *  v_cur  = ggml_new_tensor_2d(leaves, GGML_TYPE_F32, n_embd, 1);
    ggml_tensor *  idx    = ggml_new_tensor_1d(leaves, GGML_TYPE_I64, 1);
    ggml_tensor *  mask   = ggml_new_tensor_2d(leaves, GGML_TYPE_F16, n_kv, 1);
    ggml_tensor *  kc[2], *vc[2];  // [0]: set_rows then the op; [1]: the storing op
    for (int i = 0; i < 2; ++i) {
        kc[i] = ggml_new_tensor_2d(leaves, GGML_TYPE_F16, n_embd, n_kv);
        vc[i] = ggml_new_tensor_2d(leaves, GGML_TYPE_F16, n_embd, n_kv);
    }
    w.alloc(leaves);
    set_f32(q, random_floats(d * n_head, 60)), set_f32(k_cur, random_floats(n_embd, 61)), set_f32(v_cur, random_floats(n_embd, 62));
    const int64_t c = cell;
    ggml_backend_tensor_set(idx, &c, 0, sizeof c);
    std::vector<ggml_fp16_t> mh(n_kv);
    for (int64_t i = 0; i < n_kv; ++i) mh[i] = ggml_fp32_to_fp16(i <= cell ? 0.0f : -INFINITY);
    ggml_backend_tensor_set(mask, mh.data(), 0, mh.size() * 2);
    const auto               kf = random_floats(n_embd * n_kv, 63), vf = random_floats(n_embd * n_kv, 64);
    std::vector<ggml_fp16_t> kh(kf.size()), vh(vf.size());
    for (size_t i = 0; i < kf.size(); ++i) kh[i] = ggml_fp32_to_fp16(kf[i]), vh[i] = ggml_fp32_to_fp16(vf[i]);
    for (int i = 0; i < 2; ++i) {
        ggml_backend_tensor_set(kc[i], kh.data(), 0, kh.size() * 2);
        ggml_backend_tensor_set(vc[i], vh.data(), 0, vh.size() * 2);
    }
    // the graph's views of the cache: [head_dim, n_kv, n_head]
    auto view = [&](ggml_context * ctx, ggml_tensor * cache) {
        return ggml_view_3d(ctx, cache, d, n_kv, n_head, cache->nb[1], ggml_row_size(cache->type, d), 0);
    };
    const float    scale = 1.0f / std::sqrt(static_cast<float>(d));
    ggml_context * n1    = w.context();
    CHECK(xglm_attention_can_store(q, k_cur, v_cur, idx), "the op can store one token's rows");
    const auto ref = w.compute(n1, xglm_attention(n1, q, view(n1, kc[0]), view(n1, vc[0]), mask, scale),
                               {ggml_set_rows(n1, kc[0], k_cur, idx), ggml_set_rows(n1, vc[0], v_cur, idx)});
    ggml_context * n2   = w.context();
    const auto     ours = w.compute(n2, xglm_attention(n2, q, view(n2, kc[1]), view(n2, vc[1]), mask, scale, k_cur, v_cur, idx));
    CHECK(count_bit_differences(ours, ref) == 0, "the storing op's result differs from set_rows then the op");
    for (ggml_tensor ** pair : {kc, vc}) {
        std::vector<ggml_fp16_t> a(n_embd * n_kv), b(n_embd * n_kv);
        ggml_backend_tensor_get(pair[0], a.data(), 0, a.size() * 2);
        ggml_backend_tensor_get(pair[1], b.data(), 0, b.size() * 2);
        CHECK(std::memcmp(a.data(), b.data(), a.size() * 2) == 0, "the cache after the storing op differs from set_rows'");
        CHECK(std::memcmp(a.data(), kc == pair ? kh.data() : vh.data(), cell * n_embd * 2) == 0, "cells before the token are untouched");
        CHECK(std::memcmp(a.data() + cell * n_embd, (kc == pair ? kh.data() : vh.data()) + cell * n_embd, n_embd * 2) != 0,
              "the token's cell was written");
    }
}

// ---------------------------------------------------------------------------------------
// a model (--gguf): the generation step

void generation_greedy() {
    std::string                       err;
    xglm_model_params                 mp;
    std::shared_ptr<const xglm_model> model(xglm_model_load(g_gguf, mp, &err), xglm_model_free);
    if (!model) throw failure{"loading " + g_gguf + ": " + err};
    xglm_context_params cp;
    cp.n_ctx     = 64;
    cp.n_threads = 2;
    std::unique_ptr<xglm_context, void (*)(xglm_context *)> ctx(xglm_context_new(model, cp, &err), xglm_context_free);
    if (!ctx) throw failure{"context: " + err};
    const int32_t n_vocab = xglm_model_hparams(model.get()).n_vocab;
    xglm_batch    prompt;
    prompt.tokens      = {2, 5 % n_vocab, 7 % n_vocab, 11 % n_vocab};
    prompt.pos         = {0, 1, 2, 3};
    prompt.seq         = {0, 0, 0, 0};
    prompt.want_logits = {0, 0, 0, 1};
    CHECK(xglm_decode(ctx.get(), prompt, &err) == XGLM_OK, "prompt: " + err);

    xglm_generation_params gp;
    gp.sampler.temperature = 0.0f;
    gp.position            = 4;
    gp.max_steps           = 8;
    gp.position_limit      = 64;
    std::mt19937_64 rng(0);
    xglm_generator  gen(ctx.get(), gp, rng);
    CHECK(gen.start(3, &err), err);
    CHECK(!gen.start(0, &err) && err.find("has no logits") != std::string::npos, "a row without logits is refused");
    CHECK(gen.start(3, &err), err);
    int32_t row = 3;
    for (;;) {
        const float * logits = xglm_get_logits(ctx.get(), row);
        CHECK(logits != nullptr, "logits of the last decode");
        const int32_t argmax = static_cast<int32_t>(std::max_element(logits, logits + n_vocab) - logits);
        const int32_t id     = gen.sample();
        CHECK(id == argmax, "step " + std::to_string(gen.steps()) + ": greedy draw " + std::to_string(id) + ", argmax " + std::to_string(argmax));
        if (gen.finished(id)) break;
        CHECK(gen.evaluate(id, &err) == XGLM_OK, err);
        row = 0;
    }
    CHECK(gen.steps() == 8 && gen.position() == 4 + 7, "8 draws, 7 evaluations");
    CHECK(xglm_kv_seq_pos_max(ctx.get(), 0) == 10, "the evaluated tokens are in the cache");
}

// The scheduler: streams batched per step equal each generation run alone (F32 cache; the
// batched products differ from the one-row path only in summation order), one step carries a
// token of every stream, a removed stream leaves the others unchanged, and a reservation that
// does not fit is refused.
void scheduler_streams() {
    std::string                       err;
    xglm_model_params                 mp;
    std::shared_ptr<const xglm_model> model(xglm_model_load(g_gguf, mp, &err), xglm_model_free);
    if (!model) throw failure{"loading " + g_gguf + ": " + err};
    xglm_context_params cp;
    cp.n_ctx     = 256;
    cp.n_threads = 2;
    cp.type_kv   = GGML_TYPE_F32;
    using ctx_ptr = std::unique_ptr<xglm_context, void (*)(xglm_context *)>;
    const int32_t n_vocab = xglm_model_hparams(model.get()).n_vocab;
    const int     n_streams = 4, n_steps = 8;
    std::vector<std::vector<int32_t>> prompts;
    for (int s = 0; s < n_streams; ++s) {
        std::vector<int32_t> p = {2};
        for (int i = 0; i < 3 + 2 * s; ++i) p.push_back((7 + 13 * s + 31 * i) % n_vocab);
        prompts.push_back(p);
    }
    auto params = [&](int s) {
        xglm_stream_params sp;
        sp.prompt                  = prompts[s];
        sp.gen.sampler.temperature = s % 2 ? 0.8f : 0.0f;  // greedy and seeded sampling
        sp.gen.seed                = 100 + s;
        sp.gen.seq                 = s;
        sp.gen.position            = static_cast<int32_t>(prompts[s].size());
        sp.gen.max_steps           = n_steps;
        sp.gen.position_limit      = 128;
        sp.reserve                 = n_steps;
        return sp;
    };
    // each alone, with the one-row generator
    std::vector<std::vector<int32_t>> ref(n_streams);
    for (int s = 0; s < n_streams; ++s) {
        ctx_ptr ctx(xglm_context_new(model, cp, &err), xglm_context_free);
        if (!ctx) throw failure{"context: " + err};
        xglm_batch b;
        for (size_t i = 0; i < prompts[s].size(); ++i) {
            b.tokens.push_back(prompts[s][i]);
            b.pos.push_back(static_cast<int32_t>(i));
            b.seq.push_back(s);
            b.want_logits.push_back(i + 1 == prompts[s].size());
        }
        CHECK(xglm_decode(ctx.get(), b, &err) == XGLM_OK, err);
        std::mt19937_64 rng;
        xglm_generator  gen(ctx.get(), params(s).gen, rng);
        CHECK(gen.start(static_cast<int32_t>(prompts[s].size()) - 1, &err), err);
        for (;;) {
            const int32_t id = gen.sample();
            ref[s].push_back(id);
            if (gen.finished(id)) break;
            CHECK(gen.evaluate(id, &err) == XGLM_OK, err);
        }
    }
    auto run = [&](int remove_at, int remove_stream) {
        ctx_ptr ctx(xglm_context_new(model, cp, &err), xglm_context_free);
        if (!ctx) throw failure{"context: " + err};
        xglm_scheduler sched(ctx.get(), 4);  // prompt chunks of 4 tokens beside decoding streams
        std::vector<int64_t> ids;
        xglm_status          st;
        for (int s = 0; s < n_streams; ++s) {
            ids.push_back(sched.add(params(s), &st, &err));
            CHECK(ids.back() >= 0, err);
        }
        std::vector<std::vector<int32_t>> got(n_streams);
        std::vector<xglm_step_event>      events;
        int                               steps = 0;
        while (sched.size() > 0) {
            if (steps == remove_at) sched.remove(ids[remove_stream]);
            CHECK(sched.step([](int64_t) { return true; }, &events, &st, &err), "step: " + err);
            ++steps;
            for (const auto & e : events) {
                CHECK(e.status == XGLM_OK, e.error);
                const int s = static_cast<int>(std::find(ids.begin(), ids.end(), e.id) - ids.begin());
                if (e.drawn) got[s].push_back(e.token);
            }
        }
        return std::make_pair(got, steps);
    };
    auto [got, steps] = run(-1, 0);
    for (int s = 0; s < n_streams; ++s) CHECK(got[s] == ref[s], "stream " + std::to_string(s) + " differs from its run alone");
    CHECK(steps <= n_steps + 3, "one step carries a token of every stream (" + std::to_string(steps) + " steps)");
    auto [cut, steps2] = run(3, 1);
    (void)steps2;
    for (int s = 0; s < n_streams; ++s) {
        if (s == 1) CHECK(cut[s].size() < ref[s].size(), "the removed stream stopped");
        else CHECK(cut[s] == ref[s], "stream " + std::to_string(s) + " changed when stream 1 was removed");
    }
    // reservations
    ctx_ptr ctx(xglm_context_new(model, cp, &err), xglm_context_free);
    xglm_scheduler     sched(ctx.get());
    xglm_status        st;
    xglm_stream_params big = params(0);
    big.reserve            = 245;
    CHECK(sched.add(big, &st, &err) >= 0, err);
    xglm_stream_params other = params(1);
    CHECK(sched.add(other, &st, &err) < 0 && st == XGLM_ERR_KV_FULL, "a reservation beyond the free cells is refused");
    CHECK(sched.add(params(0), &st, &err) < 0 && st == XGLM_ERR_INPUT, "one stream per sequence");
    g_note = std::to_string(steps) + " steps for " + std::to_string(n_streams) + " streams of " + std::to_string(n_steps) + " tokens";
}

// A case, and why it cannot run here ("" when it can): known before running it, so that
// `--list` can say which cases are skipped and why.
struct test_case {
    const char *                 name;
    std::function<void()>        run;
    std::function<std::string()> skip_reason = [] { return std::string(); };
    bool                         needs_gguf  = false;
};

const std::vector<test_case> & cases() {
    static const std::vector<test_case> all = {
        {"kv_cells", kv_cells},
        {"sampler_greedy", sampler_greedy},
        {"sampler_top_k_top_p", sampler_top_k_top_p},
        {"sampler_seed", sampler_seed},
        {"sampler_log_softmax", sampler_log_softmax},
        {"kernel_plan", kernel_plan},
        {"op_layer_norm", op_layer_norm,
         [] {
             const xglm_kernel_plan p = current_plan();
             return op_skip_reason(p.gemv_q4_0 || p.gemv_q6_k, "decode-gemv (whose folded norm this is)");
         }},
        {"op_gelu_bias", op_gelu_bias, [] { return op_skip_reason(current_plan().gelu_bias, "GELU"); }},
        {"op_decode_gemv_q6_k", op_decode_gemv_q6_k, [] { return op_skip_reason(current_plan().gemv_q6_k, "Q6_K decode-gemv"); }},
        {"op_decode_gemv_q6_k_vnni", op_decode_gemv_q6_k_vnni,
         [] {
             const xglm_kernel_plan p = current_plan();
             std::string            r = op_skip_reason(p.gemv_q6_k, "Q6_K decode-gemv");
             if (r.empty() && !p.vnni) r = no_vnni_reason;
             return r;
         }},
        {"op_decode_gemv_q4_0", op_decode_gemv_q4_0,
         [] {
             const std::string r = op_skip_reason(current_plan().gemv_q4_0, "Q4_0 decode-gemv");
             if (!r.empty() || repack_buffer_type()) return r;
             return std::string("this ggml CPU backend has no CPU_REPACK buffer (the op takes only repacked Q4_0)");
         }},
        {"op_decode_gemv_q8_0", op_decode_gemv_q8_0, [] { return op_skip_reason(current_plan().gemv_q8_0, "Q8_0 decode-gemv"); }},
        {"op_quantize_q8_K", op_quantize_q8_K, [] { return op_skip_reason(current_plan().gemv_q6_k, "decode-gemv (whose Q8_K columns these are)"); }},
        {"op_decode_gemv_q5_k", op_decode_gemv_q5_k, k_quant_skip_reason},
        {"op_decode_gemv_q6_k_layer", op_decode_gemv_q6_k_layer, k_quant_skip_reason},
        {"op_decode_gemv_q4_k", op_decode_gemv_q4_k, k_quant_skip_reason},
        {"op_decode_gemv_q8_0x8", op_decode_gemv_q8_0x8,
         [] {
             const xglm_kernel_plan p = current_plan();
             std::string            r = op_skip_reason(p.gemv_q8_0, "Q8_0 decode-gemv");
             if (r.empty() && !p.vnni) r = no_vnni_reason;
             return r;
         }},
        {"op_decode_gemv_q4_0_vnni", op_decode_gemv_q4_0_vnni,
         [] {
             const xglm_kernel_plan p = current_plan();
             std::string            r = op_skip_reason(p.gemv_q4_0, "Q4_0 decode-gemv");
             if (r.empty() && !p.vnni) r = no_vnni_reason;
             if (r.empty() && !repack_buffer_type()) r = "this ggml CPU backend has no CPU_REPACK buffer (the op takes only repacked Q4_0)";
             return r;
         }},
        {"op_attention", op_attention, [] { return op_skip_reason(current_plan().attention, "attention"); }},
        {"op_attention_store", op_attention_store, [] { return op_skip_reason(current_plan().attention, "attention"); }},
        {"generation_greedy", generation_greedy, [] { return std::string(g_gguf.empty() ? "no model: pass --gguf PATH" : ""); }, true},
        {"scheduler_streams", scheduler_streams, [] { return std::string(g_gguf.empty() ? "no model: pass --gguf PATH" : ""); }, true},
    };
    return all;
}

}  // namespace

int main(int argc, char ** argv) {
    std::vector<std::string> wanted;
    bool                     list = false;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--list") {
            list = true;
        } else if (a == "--gguf" && i + 1 < argc) {
            g_gguf = argv[++i];
        } else if (a.rfind("--", 0) == 0) {
            std::fprintf(stderr, "usage: xglm-engine-tests [--list] [--gguf PATH] [CASE...]\n");
            return 2;
        } else {
            wanted.push_back(a);
        }
    }
    for (const auto & w : wanted) {
        if (std::none_of(cases().begin(), cases().end(), [&](const test_case & c) { return w == c.name; })) {
            std::fprintf(stderr, "xglm-engine-tests: no case named %s (see --list)\n", w.c_str());
            return 2;
        }
    }
    std::string err;
    if (!xglm_backend_init(&err)) {
        std::printf("{\"name\": \"backend\", \"status\": \"fail\", \"message\": \"%s\"}\n", json_escape(err).c_str());
        return 1;
    }
    if (list) {
        // {"name", "skip": reason or "" (from the kernel plan and this CPU, or the missing model),
        //  "gguf": whether it wants --gguf}
        for (const auto & c : cases()) {
            std::printf("{\"name\": \"%s\", \"skip\": \"%s\", \"gguf\": %s}\n", c.name, json_escape(c.skip_reason()).c_str(),
                        c.needs_gguf ? "true" : "false");
        }
        return 0;
    }
    int failed = 0;
    for (const auto & c : cases()) {
        if (!wanted.empty() && std::find(wanted.begin(), wanted.end(), c.name) == wanted.end()) continue;
        std::string status = "pass", message;
        g_note.clear();
        try {
            if (const std::string why = c.skip_reason(); !why.empty()) throw skipped{why};
            c.run();
            message = g_note;
        } catch (const failure & f) {
            status = "fail", message = f.message;
        } catch (const skipped & s) {
            status = "skip", message = s.reason;
        } catch (const std::exception & e) {
            status = "fail", message = std::string("exception: ") + e.what();
        }
        failed += status == "fail";
        std::printf("{\"name\": \"%s\", \"status\": \"%s\", \"message\": \"%s\"}\n", c.name, status.c_str(),
                    json_escape(message).c_str());
        std::fflush(stdout);
    }
    return failed > 0 ? 1 : 0;
}
