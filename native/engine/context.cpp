// An XGLM context: the backend and threadpool, the KV cache with cells per sequence, and the
// compute memory reserved for the largest ubatch. The graph is in graph.cpp, decoding in
// decode.cpp; weights come from model.cpp.
#include <algorithm>
#include <atomic>

#include "xglm-impl.h"

namespace {

bool abort_callback(void * data) { return static_cast<xglm_context *>(data)->abort_requested.load(); }

template <typename Fn> Fn cpu_proc(const char * name) { return reinterpret_cast<Fn>(xglm_cpu_proc(name)); }

}  // namespace

xglm_context * xglm_context_new(std::shared_ptr<const xglm_model> model, const xglm_context_params & params,
                                std::string * error) {
    const xglm_hparams & hp   = model->hparams;
    auto                 lctx = std::make_unique<xglm_context>();
    lctx->model               = model;
    lctx->params              = params;
    auto & p                  = lctx->params;
    if (p.n_ctx == 0) p.n_ctx = hp.n_ctx_train;
    if (p.n_ubatch == 0) p.n_ubatch = 512;
    if (p.n_outputs == 0) p.n_outputs = 1;
    p.n_ubatch  = std::min(p.n_ubatch, p.n_ctx);
    p.n_outputs = std::min(p.n_outputs, p.n_ubatch);
    const int64_t n_embd_head = hp.n_embd / hp.n_head;
    if (p.type_kv != GGML_TYPE_F16 && p.type_kv != GGML_TYPE_F32 && p.type_kv != GGML_TYPE_Q8_0) {
        xglm_fail(error, std::string("KV cache type ") + ggml_type_name(p.type_kv) + " is not supported; use f16, f32 or q8_0");
        return nullptr;
    }
    if (n_embd_head % ggml_blck_size(p.type_kv) != 0) {
        xglm_fail(error, "a " + std::string(ggml_type_name(p.type_kv)) + " KV cache needs a head size divisible by " +
                        std::to_string(ggml_blck_size(p.type_kv)) + " (this model's is " + std::to_string(n_embd_head) +
                        "); use kvType f16");
        return nullptr;
    }
    // the custom ops of every graph of this context (kernel-plan.h)
    if (!xglm_kernel_plan_from_env(xglm_backend_kernel_isa(), xglm_backend_kernel_vnni(), &lctx->kernels, error)) return nullptr;
    lctx->n_threads = p.n_threads > 0 ? std::min(p.n_threads, GGML_MAX_N_THREADS) : xglm_physical_cores();

    // backend and a persistent threadpool
    lctx->backend = ggml_backend_dev_init(xglm_cpu_device(), nullptr);
    if (!lctx->backend) return xglm_fail(error, "ggml could not start its CPU backend"), nullptr;
    auto tp_new  = cpu_proc<ggml_threadpool_t (*)(ggml_threadpool_params *)>("ggml_threadpool_new");
    auto tp_set  = cpu_proc<void (*)(ggml_backend_t, ggml_threadpool_t)>("ggml_backend_cpu_set_threadpool");
    lctx->threadpool_free = cpu_proc<void (*)(ggml_threadpool_t)>("ggml_threadpool_free");
    if (auto set_threads = cpu_proc<ggml_backend_set_n_threads_t>("ggml_backend_set_n_threads")) {
        set_threads(lctx->backend, lctx->n_threads);
    }
    if (tp_new && tp_set && lctx->threadpool_free) {
        ggml_threadpool_params tpp = ggml_threadpool_params_default(lctx->n_threads);
        // Idle workers poll for new work briefly, then sleep. ggml's default (50) spins for
        // ~100 ms after every graph, and a process may hold many contexts whose spinning workers
        // starve the others and the JS thread. Never polling (0) makes every graph wait for a
        // sleeping worker to be scheduled: measured 2 ms per 564M decode token on this 2-core VM
        // (bench/ab.ts, 8 pairs: 47.9 vs 53.3 t/s). 1 spins ~3.6 ms at most here (2^17 pause
        // instructions), which covers the gap between the graphs of a generation or a scoring.
        tpp.poll                   = 1;
        lctx->threadpool           = tp_new(&tpp);
        if (lctx->threadpool) tp_set(lctx->backend, lctx->threadpool);
    }
    if (auto set_abort = cpu_proc<ggml_backend_set_abort_callback_t>("ggml_backend_set_abort_callback")) {
        set_abort(lctx->backend, abort_callback, lctx.get());
    }

    // KV cache
    {
        const size_t kv_bytes = 2 * static_cast<size_t>(hp.n_layer) * ggml_row_size(p.type_kv, hp.n_embd) * p.n_ctx;
        if (kv_bytes > xglm_physical_memory()) {
            xglm_fail(error, "a KV cache of " + std::to_string(p.n_ctx) + " cells needs " + std::to_string(kv_bytes >> 20) +
                            " MB, more memory than this machine has (" + std::to_string(xglm_physical_memory() >> 20) +
                            " MB); use a smaller contextSize");
            return nullptr;
        }
        ggml_init_params ip = {ggml_tensor_overhead() * 2 * hp.n_layer, nullptr, true};
        lctx->ctx_kv        = ggml_init(ip);
        for (int il = 0; il < hp.n_layer; ++il) {
            lctx->k_l.push_back(ggml_new_tensor_2d(lctx->ctx_kv, p.type_kv, hp.n_embd, p.n_ctx));
            lctx->v_l.push_back(ggml_new_tensor_2d(lctx->ctx_kv, p.type_kv, hp.n_embd, p.n_ctx));
            ggml_format_name(lctx->k_l.back(), "cache_k-%d", il);
            ggml_format_name(lctx->v_l.back(), "cache_v-%d", il);
        }
        lctx->buf_kv = ggml_backend_alloc_ctx_tensors_from_buft(lctx->ctx_kv, ggml_backend_cpu_buffer_type());
        if (!lctx->buf_kv) {
            xglm_fail(error, "out of memory for a KV cache of " + std::to_string(p.n_ctx) + " cells; use a smaller contextSize");
            return nullptr;
        }
        xglm_advise_huge_pages(lctx->buf_kv);  // before the clear touches its pages
        // cells never written must still be finite: a masked -inf times a NaN is NaN
        ggml_backend_buffer_clear(lctx->buf_kv, 0);
        lctx->cells.resize(p.n_ctx);
    }

    // compute memory for the largest ubatch, reserved once
    lctx->buf_graph_meta.resize(ggml_tensor_overhead() * xglm_graph_size(hp) + ggml_graph_overhead_custom(xglm_graph_size(hp), false));
    lctx->galloc = ggml_gallocr_new(ggml_backend_get_default_buffer_type(lctx->backend));
    ubatch_inputs in;
    ggml_cgraph * gf = xglm_build_graph(lctx.get(), p.n_ubatch, p.n_ctx, p.n_outputs, &in);
    if (!ggml_gallocr_reserve(lctx->galloc, gf)) {
        xglm_fail(error, "out of memory for the compute buffers; use a smaller batch size");
        return nullptr;
    }
    return lctx.release();
}

void xglm_context_free(xglm_context * ctx) { delete ctx; }

const xglm_model * xglm_context_model(const xglm_context * ctx) { return ctx->model.get(); }
uint32_t           xglm_n_ctx(const xglm_context * ctx) { return ctx->params.n_ctx; }
int32_t  xglm_n_threads(const xglm_context * ctx) { return ctx->n_threads; }

void xglm_context_set_abort(xglm_context * ctx, bool abort) { ctx->abort_requested.store(abort); }

// ---------------------------------------------------------------------------------------
// KV cache

void xglm_kv_clear(xglm_context * ctx) {
    std::fill(ctx->cells.begin(), ctx->cells.end(), xglm_kv_cell{});
}

void xglm_cells_seq_rm(std::vector<xglm_kv_cell> & cells, int32_t seq, int32_t p0, int32_t p1) {
    if (seq < 0 || seq >= XGLM_MAX_SEQ) return;
    const uint64_t bit = uint64_t(1) << seq;
    for (auto & c : cells) {
        if ((c.seq & bit) && c.pos >= p0 && (p1 < 0 || c.pos < p1)) {
            c.seq &= ~bit;
            if (!c.used()) c.pos = -1;
        }
    }
}

void xglm_cells_seq_cp(std::vector<xglm_kv_cell> & cells, int32_t seq_src, int32_t seq_dst, int32_t p0, int32_t p1) {
    if (seq_src < 0 || seq_src >= XGLM_MAX_SEQ || seq_dst < 0 || seq_dst >= XGLM_MAX_SEQ || seq_src == seq_dst) return;
    // dst's own cells in the range go first: a position must not be cached twice for it
    xglm_cells_seq_rm(cells, seq_dst, p0, p1);
    const uint64_t src = uint64_t(1) << seq_src, dst = uint64_t(1) << seq_dst;
    for (auto & c : cells) {
        if ((c.seq & src) && c.pos >= p0 && (p1 < 0 || c.pos < p1)) c.seq |= dst;
    }
}

int32_t xglm_cells_seq_pos_max(const std::vector<xglm_kv_cell> & cells, int32_t seq) {
    if (seq < 0 || seq >= XGLM_MAX_SEQ) return -1;
    const uint64_t bit = uint64_t(1) << seq;
    int32_t        m   = -1;
    for (const auto & c : cells) {
        if (c.seq & bit) m = std::max(m, c.pos);
    }
    return m;
}

void xglm_kv_seq_rm(xglm_context * ctx, int32_t seq, int32_t p0, int32_t p1) { xglm_cells_seq_rm(ctx->cells, seq, p0, p1); }

void xglm_kv_seq_cp(xglm_context * ctx, int32_t seq_src, int32_t seq_dst, int32_t p0, int32_t p1) {
    xglm_cells_seq_cp(ctx->cells, seq_src, seq_dst, p0, p1);
}

int32_t xglm_kv_seq_pos_max(const xglm_context * ctx, int32_t seq) { return xglm_cells_seq_pos_max(ctx->cells, seq); }

uint64_t xglm_compute_ns(const xglm_context * ctx) { return ctx->compute_ns; }

int32_t xglm_kv_used_cells(const xglm_context * ctx) {
    return static_cast<int32_t>(std::count_if(ctx->cells.begin(), ctx->cells.end(), [](const xglm_kv_cell & c) { return c.used(); }));
}

