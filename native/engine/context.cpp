// An XGLM context: KV cache with cells per sequence, the forward graph of XGLM (docs/architecture.md, “Numerics”),
// and decoding of batches split into ubatches. Weights come from xglm.cpp.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "attention.h"
#include "backend.h"
#include "decode-gemv.h"
#include "gelu.h"
#include "xglm-impl.h"

// ---------------------------------------------------------------------------------------
// context

// One KV cell holds the key and value rows of one token: the token's sequence index (pos)
// and the set of sequences that see it (a copied prefix shares cells, as positions are
// absolute and the rows depend only on the prefix).
struct xglm_kv_cell {
    int32_t  pos = -1;
    uint64_t seq = 0;  // bit s = sequence s

    bool used() const { return seq != 0; }
};

// The inputs of one ubatch graph.
struct ubatch_inputs {
    ggml_tensor * tokens  = nullptr;  // I32 [n_tokens]
    ggml_tensor * pos     = nullptr;  // I32 [n_tokens]: row of the position table
    ggml_tensor * kv_idxs = nullptr;  // I64 [n_tokens]: KV cell each token is written to
    ggml_tensor * mask    = nullptr;  // F16 [n_kv, n_tokens]: 0 = visible, -inf = not
    ggml_tensor * out_ids = nullptr;  // I32 [n_outputs]: tokens whose logits are kept
    ggml_tensor * logits  = nullptr;  // F32 [n_vocab, n_outputs] (output)
};

// The last graph built and allocated: a ubatch of the same shape runs it again without
// building or allocating it (token-by-token decoding, where that cost ~1% of the time).
struct graph_cache {
    ggml_cgraph * gf        = nullptr;  // lives in buf_graph_meta until the next build
    ubatch_inputs in;
    int           n_tokens  = -1;
    int           n_kv      = -1;
    int           n_outputs = -1;
};

struct xglm_context {
    std::shared_ptr<const xglm_model> model;
    xglm_context_params               params;
    int32_t                           n_threads = 1;

    ggml_backend_t    backend    = nullptr;
    ggml_threadpool_t threadpool = nullptr;
    void (*threadpool_free)(ggml_threadpool_t) = nullptr;

    // KV cache: per layer [n_embd, n_ctx] for K and V (row c = cell c)
    ggml_context *             ctx_kv = nullptr;
    ggml_backend_buffer_t      buf_kv = nullptr;
    std::vector<ggml_tensor *> k_l, v_l;
    std::vector<xglm_kv_cell>  cells;

    // graph: tensor metadata per build, compute memory reserved once for the worst ubatch
    std::vector<uint8_t> buf_graph_meta;
    ggml_gallocr_t       galloc = nullptr;
    graph_cache          last_graph;

    std::atomic<bool> abort_requested{false};
    uint64_t          compute_ns = 0;  // inside ggml_backend_graph_compute

    // results of the last decode
    std::vector<float>                        logits;       // [n_vocab] per kept row, when copied
    const float *                             logits_data = nullptr;  // logits, or the output tensor of a one-ubatch decode
    std::vector<int32_t>                      logits_row;   // batch index → row in logits_data, or -1
    std::map<std::string, std::vector<float>> activations;

    ~xglm_context() {
        if (galloc) ggml_gallocr_free(galloc);
        if (backend) ggml_backend_free(backend);
        if (threadpool && threadpool_free) threadpool_free(threadpool);
        if (buf_kv) ggml_backend_buffer_free(buf_kv);
        if (ctx_kv) ggml_free(ctx_kv);
    }
};

namespace {

bool fail(std::string * error, const std::string & msg) {
    if (error) *error = msg;
    return false;
}

size_t graph_size(const xglm_hparams & hp) { return std::max<size_t>(1024, 40 * hp.n_layer + 64); }

ggml_tensor * layer_norm(ggml_context * ctx, ggml_tensor * x, ggml_tensor * w, ggml_tensor * b, float eps) {
    x = ggml_norm(ctx, x, eps);
    return ggml_add(ctx, ggml_mul(ctx, x, w), b);
}

// Whether the decode-gemv op can take all four products of a layer for this ubatch: one token
// (decode) and repacked Q4_0 weights. Then the layer runs as five nodes plus the cache writes:
// the norms, bias adds, GELU and residual adds ride inside the products (decode-gemv.h), which
// keep ggml's arithmetic for them. Other types keep ggml's nodes: F16 and Q8_0 measured no
// faster as custom ops, and Q6_K layer weights (q4_k_m) were not measured.
bool fused_layer(const xglm_layer & l, const ggml_tensor * x) {
    if (x->ne[1] != 1 || x->type != GGML_TYPE_F32 || !ggml_is_contiguous(x)) return false;
    for (const auto & [w, b] : {std::pair{l.attn_qkv, l.attn_qkv_b}, std::pair{l.attn_output, l.attn_output_b},
                                std::pair{l.ffn_up, l.ffn_up_b}, std::pair{l.ffn_down, l.ffn_down_b}}) {
        if (w->type != GGML_TYPE_Q4_0 || !xglm_decode_gemv_weight_usable(w, b)) return false;
    }
    return true;
}

ggml_tensor * linear(ggml_context * ctx, ggml_tensor * x, ggml_tensor * w, ggml_tensor * b) {
    return ggml_add(ctx, ggml_mul_mat(ctx, w, x), b);
}

void name(ggml_tensor * t, const char * what, int il) {
    if (il < 0) {
        ggml_set_name(t, what);
    } else {
        ggml_format_name(t, "%s-%d", what, il);
    }
}

// The XGLM forward pass for n_tokens tokens attending over the first n_kv cells.
ggml_cgraph * build_graph(xglm_context * lctx, int n_tokens, int n_kv, int n_outputs, ubatch_inputs * in) {
    const xglm_model &   model = *lctx->model;
    const xglm_hparams & hp    = model.hparams;
    const int64_t        n_embd      = hp.n_embd;
    const int64_t        n_head      = hp.n_head;
    const int64_t        n_embd_head = n_embd / n_head;
    const float          eps         = hp.norm_eps;

    lctx->last_graph = graph_cache{};  // its tensors are about to be overwritten
    ggml_init_params ip = {lctx->buf_graph_meta.size(), lctx->buf_graph_meta.data(), true};
    ggml_context *   ctx = ggml_init(ip);
    ggml_cgraph *    gf  = ggml_new_graph_custom(ctx, graph_size(hp), false);

    in->tokens  = ggml_new_tensor_1d(ctx, GGML_TYPE_I32, n_tokens);
    in->pos     = ggml_new_tensor_1d(ctx, GGML_TYPE_I32, n_tokens);
    in->kv_idxs = ggml_new_tensor_1d(ctx, GGML_TYPE_I64, n_tokens);
    in->mask    = ggml_new_tensor_2d(ctx, GGML_TYPE_F16, n_kv, n_tokens);
    name(in->tokens, "inp_tokens", -1);
    name(in->pos, "inp_pos", -1);
    name(in->kv_idxs, "inp_kv_idxs", -1);
    name(in->mask, "inp_mask", -1);
    for (ggml_tensor * t : {in->tokens, in->pos, in->kv_idxs, in->mask}) ggml_set_input(t);

    // embeddings: token × scale + sinusoid
    ggml_tensor * cur = ggml_get_rows(ctx, model.token_embd, in->tokens);  // [n_embd, n_tokens]
    cur               = ggml_scale(ctx, cur, hp.embd_scale);
    ggml_tensor * inpL = ggml_add(ctx, cur, ggml_get_rows(ctx, model.position_embd, in->pos));
    name(inpL, "inp_embd", -1);

    const bool keep = lctx->params.keep_activations;
    if (keep) ggml_set_output(inpL);
    int n_custom_gemv = 0;  // layer products through decode-gemv's op
    int n_custom_attn = 0;  // layers attending through attention.h's op

    for (int il = 0; il < hp.n_layer; ++il) {
        const xglm_layer & layer = model.layers[il];

        const bool fused = fused_layer(layer, inpL);
        n_custom_gemv += fused ? 4 : 0;

        // self-attention
        {
            ggml_tensor * qkv;  // [3*n_embd, n_tokens]
            if (fused) {
                xglm_gemv_fuse f;
                f.norm_w = layer.attn_norm, f.norm_b = layer.attn_norm_b, f.norm_eps = eps;
                qkv = xglm_decode_gemv(ctx, layer.attn_qkv, inpL, layer.attn_qkv_b, f);
            } else {
                cur = layer_norm(ctx, inpL, layer.attn_norm, layer.attn_norm_b, eps);  // [n_embd, n_tokens]
                name(cur, "attn_norm", il);
                qkv = linear(ctx, cur, layer.attn_qkv, layer.attn_qkv_b);
            }
            name(qkv, "qkv", il);
            const size_t es = ggml_element_size(qkv);

            ggml_tensor * k_cur = ggml_view_2d(ctx, qkv, n_embd, n_tokens, qkv->nb[1], 1 * n_embd * es);
            ggml_tensor * v_cur = ggml_view_2d(ctx, qkv, n_embd, n_tokens, qkv->nb[1], 2 * n_embd * es);
            ggml_tensor * q     = ggml_view_3d(ctx, qkv, n_embd_head, n_head, n_tokens, n_embd_head * es, qkv->nb[1], 0);
            q                   = ggml_permute(ctx, q, 0, 2, 1, 3);  // [n_embd_head, n_tokens, n_head]

            ggml_tensor * kc = lctx->k_l[il];
            ggml_tensor * vc = lctx->v_l[il];
            ggml_tensor * k  = ggml_view_3d(ctx, kc, n_embd_head, n_kv, n_head, kc->nb[1],
                                            ggml_row_size(kc->type, n_embd_head), 0);  // [n_embd_head, n_kv, n_head]
            ggml_tensor * v  = ggml_view_3d(ctx, vc, n_embd_head, n_kv, n_head, vc->nb[1],
                                            ggml_row_size(vc->type, n_embd_head), 0);  // [n_embd_head, n_kv, n_head]

            // softmax(q·kᵀ / sqrt(head_dim) + mask) · v, [n_embd_head, n_head, n_tokens]: over an F16
            // cache our op (attention.h), otherwise ggml's flash attention. This ubatch's keys and
            // values go into their cells first: by the op itself for one token, else by set_rows.
            const float kq_scale = 1.0f / std::sqrt(static_cast<float>(n_embd_head));
            const bool  custom   = xglm_attention_usable(q, k, v, in->mask);
            const bool  store    = custom && xglm_attention_can_store(q, k_cur, v_cur, in->kv_idxs);
            if (!store) {
                ggml_build_forward_expand(gf, ggml_set_rows(ctx, kc, k_cur, in->kv_idxs));
                ggml_build_forward_expand(gf, ggml_set_rows(ctx, vc, v_cur, in->kv_idxs));
            }
            if (custom) {
                cur = store ? xglm_attention(ctx, q, k, v, in->mask, kq_scale, k_cur, v_cur, in->kv_idxs)
                            : xglm_attention(ctx, q, k, v, in->mask, kq_scale);
                ++n_custom_attn;
            } else {
                cur = ggml_flash_attn_ext(ctx, q, k, v, in->mask, kq_scale, 0.0f, 0.0f);
                ggml_flash_attn_ext_set_prec(cur, GGML_PREC_F32);
            }
            name(cur, "attn", il);
            cur = ggml_reshape_2d(ctx, cur, n_embd, n_tokens);

            if (fused) {
                xglm_gemv_fuse f;
                f.residual = inpL;
                cur = xglm_decode_gemv(ctx, layer.attn_output, cur, layer.attn_output_b, f);  // + inpL: ffn_inp
            } else {
                cur = linear(ctx, cur, layer.attn_output, layer.attn_output_b);  // [n_embd, n_tokens]
                name(cur, "attn_out", il);
                cur = ggml_add(ctx, cur, inpL);
            }
        }
        ggml_tensor * ffn_inp = cur;
        name(ffn_inp, "ffn_inp", il);

        // feed-forward: fc2(gelu(fc1(ln(x)))), exact erf GELU
        if (fused) {
            xglm_gemv_fuse up;
            up.norm_w = layer.ffn_norm, up.norm_b = layer.ffn_norm_b, up.norm_eps = eps, up.gelu = true;
            cur = xglm_decode_gemv(ctx, layer.ffn_up, ffn_inp, layer.ffn_up_b, up);  // [n_ff, n_tokens]
            name(cur, "ffn_gelu", il);
            xglm_gemv_fuse down;
            down.residual = ffn_inp;
            inpL = xglm_decode_gemv(ctx, layer.ffn_down, cur, layer.ffn_down_b, down);  // + ffn_inp: l_out
        } else {
            cur = layer_norm(ctx, ffn_inp, layer.ffn_norm, layer.ffn_norm_b, eps);
            name(cur, "ffn_norm", il);
            cur = ggml_mul_mat(ctx, layer.ffn_up, cur);  // [n_ff, n_tokens]
            name(cur, "ffn_up", il);
            // quantized weights: bias + GELU in one op on all threads (gelu.h); F32/F16: ggml's
            if (ggml_is_quantized(layer.ffn_up->type) && xglm_gelu_bias_usable(cur, layer.ffn_up_b)) {
                cur = xglm_gelu_bias(ctx, cur, layer.ffn_up_b);
            } else {
                cur = ggml_gelu_erf(ctx, ggml_add(ctx, cur, layer.ffn_up_b));
            }
            name(cur, "ffn_gelu", il);
            cur = linear(ctx, cur, layer.ffn_down, layer.ffn_down_b);  // [n_embd, n_tokens]
            name(cur, "ffn_out", il);
            inpL = ggml_add(ctx, cur, ffn_inp);
        }
        name(inpL, "l_out", il);
        if (keep) ggml_set_output(inpL);
    }

    // logits only for the rows asked for: the n_vocab-wide matmul is the largest one
    if (n_outputs > 0) {
        in->out_ids = ggml_new_tensor_1d(ctx, GGML_TYPE_I32, n_outputs);
        name(in->out_ids, "inp_out_ids", -1);
        ggml_set_input(in->out_ids);
        cur = ggml_get_rows(ctx, inpL, in->out_ids);  // [n_embd, n_outputs]
        // one row of logits from Q6_K weights (decode): a custom op that overlaps the weight
        // read with the dot products and applies the final norm itself (unless the normed row
        // is to be kept); XGLM_NO_CUSTOM_GEMV=1 keeps ggml's nodes (A/B tests)
        if (n_outputs == 1 && model.output->type == GGML_TYPE_Q6_K && xglm_decode_gemv_usable(model.output, cur, nullptr)) {
            xglm_gemv_fuse f;
            if (!keep) {
                f.norm_w = model.output_norm, f.norm_b = model.output_norm_b, f.norm_eps = eps;
            } else {
                cur = layer_norm(ctx, cur, model.output_norm, model.output_norm_b, eps);
                name(cur, "result_norm", -1);
                ggml_set_output(cur);
            }
            cur = xglm_decode_gemv(ctx, model.output, cur, nullptr, f);  // [n_vocab, 1]
            if (std::getenv("XGLM_LOG") != nullptr) std::fprintf(stderr, "xglm: logits through the Q6_K decode-gemv op\n");
        } else {
            cur = layer_norm(ctx, cur, model.output_norm, model.output_norm_b, eps);
            name(cur, "result_norm", -1);
            if (keep) ggml_set_output(cur);
            cur = ggml_mul_mat(ctx, model.output, cur);  // [n_vocab, n_outputs]
        }
        name(cur, "result_output", -1);
        ggml_set_output(cur);
        in->logits = cur;
        ggml_build_forward_expand(gf, cur);
    } else {
        ggml_build_forward_expand(gf, inpL);
    }
    // with XGLM_LOG set, say at each build which path ran: A/B runs and tests check it
    if (n_custom_gemv > 0 && std::getenv("XGLM_LOG") != nullptr) {
        std::fprintf(stderr, "xglm: %d layer products through the Q4_0 decode-gemv op\n", n_custom_gemv);
    }
    if (n_custom_attn > 0 && std::getenv("XGLM_LOG") != nullptr) {
        std::fprintf(stderr, "xglm: %d layers attend through the F16 attention op\n", n_custom_attn);
    }
    ggml_free(ctx);  // the tensors live in buf_graph_meta until the next build
    return gf;
}

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
        fail(error, std::string("KV cache type ") + ggml_type_name(p.type_kv) + " is not supported; use f16, f32 or q8_0");
        return nullptr;
    }
    if (n_embd_head % ggml_blck_size(p.type_kv) != 0) {
        fail(error, "a " + std::string(ggml_type_name(p.type_kv)) + " KV cache needs a head size divisible by " +
                        std::to_string(ggml_blck_size(p.type_kv)) + " (this model's is " + std::to_string(n_embd_head) +
                        "); use kvType f16");
        return nullptr;
    }
    lctx->n_threads = p.n_threads > 0 ? std::min(p.n_threads, GGML_MAX_N_THREADS) : xglm_physical_cores();

    // backend and a persistent threadpool
    lctx->backend = ggml_backend_dev_init(xglm_cpu_device(), nullptr);
    if (!lctx->backend) return fail(error, "ggml could not start its CPU backend"), nullptr;
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
            fail(error, "a KV cache of " + std::to_string(p.n_ctx) + " cells needs " + std::to_string(kv_bytes >> 20) +
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
            fail(error, "out of memory for a KV cache of " + std::to_string(p.n_ctx) + " cells; use a smaller contextSize");
            return nullptr;
        }
        xglm_advise_huge_pages(lctx->buf_kv);  // before the clear touches its pages
        // cells never written must still be finite: a masked -inf times a NaN is NaN
        ggml_backend_buffer_clear(lctx->buf_kv, 0);
        lctx->cells.resize(p.n_ctx);
    }

    // compute memory for the largest ubatch, reserved once
    lctx->buf_graph_meta.resize(ggml_tensor_overhead() * graph_size(hp) + ggml_graph_overhead_custom(graph_size(hp), false));
    lctx->galloc = ggml_gallocr_new(ggml_backend_get_default_buffer_type(lctx->backend));
    ubatch_inputs in;
    ggml_cgraph * gf = build_graph(lctx.get(), p.n_ubatch, p.n_ctx, p.n_outputs, &in);
    if (!ggml_gallocr_reserve(lctx->galloc, gf)) {
        fail(error, "out of memory for the compute buffers; use a smaller batch size");
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

void xglm_kv_seq_rm(xglm_context * ctx, int32_t seq, int32_t p0, int32_t p1) {
    if (seq < 0 || seq >= XGLM_MAX_SEQ) return;
    const uint64_t bit = uint64_t(1) << seq;
    for (auto & c : ctx->cells) {
        if ((c.seq & bit) && c.pos >= p0 && (p1 < 0 || c.pos < p1)) {
            c.seq &= ~bit;
            if (!c.used()) c.pos = -1;
        }
    }
}

void xglm_kv_seq_cp(xglm_context * ctx, int32_t seq_src, int32_t seq_dst, int32_t p0, int32_t p1) {
    if (seq_src < 0 || seq_src >= XGLM_MAX_SEQ || seq_dst < 0 || seq_dst >= XGLM_MAX_SEQ || seq_src == seq_dst) return;
    // dst's own cells in the range go first: a position must not be cached twice for it
    xglm_kv_seq_rm(ctx, seq_dst, p0, p1);
    const uint64_t src = uint64_t(1) << seq_src, dst = uint64_t(1) << seq_dst;
    for (auto & c : ctx->cells) {
        if ((c.seq & src) && c.pos >= p0 && (p1 < 0 || c.pos < p1)) c.seq |= dst;
    }
}

int32_t xglm_kv_seq_pos_max(const xglm_context * ctx, int32_t seq) {
    if (seq < 0 || seq >= XGLM_MAX_SEQ) return -1;
    const uint64_t bit = uint64_t(1) << seq;
    int32_t        m   = -1;
    for (const auto & c : ctx->cells) {
        if (c.seq & bit) m = std::max(m, c.pos);
    }
    return m;
}

uint64_t xglm_compute_ns(const xglm_context * ctx) { return ctx->compute_ns; }

int32_t xglm_kv_used_cells(const xglm_context * ctx) {
    return static_cast<int32_t>(std::count_if(ctx->cells.begin(), ctx->cells.end(), [](const xglm_kv_cell & c) { return c.used(); }));
}

// ---------------------------------------------------------------------------------------
// decode

namespace {

// Evaluates tokens [i0, i1) of the batch, whose outputs go to logits rows from row0.
xglm_status decode_ubatch(xglm_context * lctx, const xglm_batch & batch, int i0, int i1, int row0, bool one_ubatch,
                          std::string * error) {
    const xglm_hparams & hp       = lctx->model->hparams;
    const int            n_tokens = i1 - i0;

    // free cells, lowest first so that the attended range [0, n_kv) stays small
    std::vector<int64_t> slots;
    for (size_t c = 0; c < lctx->cells.size() && static_cast<int>(slots.size()) < n_tokens; ++c) {
        if (!lctx->cells[c].used()) slots.push_back(static_cast<int64_t>(c));
    }
    if (static_cast<int>(slots.size()) < n_tokens) {
        fail(error, "the KV cache is full (" + std::to_string(lctx->cells.size()) +
                        " cells in use); remove sequences or positions, or create the context with a larger contextSize");
        return XGLM_ERR_KV_FULL;
    }
    for (int j = 0; j < n_tokens; ++j) {
        lctx->cells[slots[j]].pos = batch.pos[i0 + j];
        lctx->cells[slots[j]].seq = uint64_t(1) << batch.seq[i0 + j];
    }
    int n_kv = 0;
    for (size_t c = 0; c < lctx->cells.size(); ++c) {
        if (lctx->cells[c].used()) n_kv = static_cast<int>(c) + 1;
    }
    // attend over a multiple of 256 cells (the extra ones are masked, and flash attention
    // skips masked cells) so that consecutive tokens have graphs of one shape
    n_kv = std::min(static_cast<int>(lctx->cells.size()), (n_kv + 255) / 256 * 256);
    auto release_slots = [&] {
        for (int64_t s : slots) lctx->cells[s] = xglm_kv_cell{};
    };

    std::vector<int32_t> out_ids;
    for (int j = 0; j < n_tokens; ++j) {
        if (batch.want_logits[i0 + j]) out_ids.push_back(j);
    }
    const int n_outputs = static_cast<int>(out_ids.size());

    graph_cache & g = lctx->last_graph;
    if (!(g.gf && g.n_tokens == n_tokens && g.n_kv == n_kv && g.n_outputs == n_outputs)) {
        ubatch_inputs fresh;
        ggml_cgraph * built = build_graph(lctx, n_tokens, n_kv, n_outputs, &fresh);
        if (!ggml_gallocr_alloc_graph(lctx->galloc, built)) {
            release_slots();
            fail(error, "out of memory for the compute buffers");
            return XGLM_ERR_COMPUTE;
        }
        g = graph_cache{built, fresh, n_tokens, n_kv, n_outputs};
    }
    ggml_cgraph * const   gf = g.gf;
    const ubatch_inputs & in = g.in;

    ggml_backend_tensor_set(in.tokens, batch.tokens.data() + i0, 0, n_tokens * sizeof(int32_t));
    ggml_backend_tensor_set(in.pos, batch.pos.data() + i0, 0, n_tokens * sizeof(int32_t));
    ggml_backend_tensor_set(in.kv_idxs, slots.data(), 0, n_tokens * sizeof(int64_t));
    {
        // token j sees cell c when c belongs to its sequence at a position not after its own
        const ggml_fp16_t    zero = ggml_fp32_to_fp16(0.0f), ninf = ggml_fp32_to_fp16(-INFINITY);
        std::vector<ggml_fp16_t> mask(static_cast<size_t>(n_kv) * n_tokens, ninf);
        for (int j = 0; j < n_tokens; ++j) {
            const uint64_t bit = uint64_t(1) << batch.seq[i0 + j];
            const int32_t  p   = batch.pos[i0 + j];
            ggml_fp16_t *  row = mask.data() + static_cast<size_t>(j) * n_kv;
            for (int c = 0; c < n_kv; ++c) {
                const xglm_kv_cell & cell = lctx->cells[c];
                if ((cell.seq & bit) && cell.pos <= p) row[c] = zero;
            }
        }
        ggml_backend_tensor_set(in.mask, mask.data(), 0, mask.size() * sizeof(ggml_fp16_t));
    }
    if (n_outputs > 0) ggml_backend_tensor_set(in.out_ids, out_ids.data(), 0, n_outputs * sizeof(int32_t));

    const auto        t0 = std::chrono::steady_clock::now();
    const ggml_status st = ggml_backend_graph_compute(lctx->backend, gf);
    lctx->compute_ns += static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count());
    if (st == GGML_STATUS_ABORTED) {
        release_slots();
        fail(error, "evaluation aborted");
        return XGLM_ABORTED;
    }
    if (st != GGML_STATUS_SUCCESS) {
        release_slots();
        fail(error, std::string("ggml graph computation failed: ") + ggml_status_to_string(st));
        return XGLM_ERR_COMPUTE;
    }

    if (n_outputs > 0) {
        if (one_ubatch && ggml_backend_buffer_is_host(in.logits->buffer)) {
            // read in place until the next decode: no copy of n_vocab floats per row
            lctx->logits_data = static_cast<const float *>(in.logits->data);
        } else {
            ggml_backend_tensor_get(in.logits, lctx->logits.data() + static_cast<size_t>(row0) * hp.n_vocab, 0,
                                    static_cast<size_t>(n_outputs) * hp.n_vocab * sizeof(float));
            lctx->logits_data = lctx->logits.data();
        }
    }
    if (lctx->params.keep_activations) {
        for (int i = 0; i < ggml_graph_n_nodes(gf); ++i) {
            ggml_tensor * t = ggml_graph_node(gf, i);
            if (!(t->flags & GGML_TENSOR_FLAG_OUTPUT) || t->type != GGML_TYPE_F32 || t == in.logits) continue;
            auto &       dst = lctx->activations[ggml_get_name(t)];
            const size_t old = dst.size();
            dst.resize(old + ggml_nelements(t));
            ggml_backend_tensor_get(t, dst.data() + old, 0, ggml_nbytes(t));
        }
    }
    return XGLM_OK;
}

}  // namespace

xglm_status xglm_decode(xglm_context * lctx, const xglm_batch & batch, std::string * error) {
    const xglm_hparams & hp = lctx->model->hparams;
    const int            n  = static_cast<int>(batch.tokens.size());
    // nothing from an earlier decode stays readable, and a failed one leaves no rows
    lctx->logits.clear();
    lctx->logits_data = nullptr;
    lctx->logits_row.clear();
    lctx->activations.clear();
    std::vector<int32_t> logits_row(n, -1);

    if (n == 0) return fail(error, "the batch is empty"), XGLM_ERR_INPUT;
    if (batch.pos.size() != batch.tokens.size() || batch.seq.size() != batch.tokens.size() ||
        batch.want_logits.size() != batch.tokens.size()) {
        fail(error, "tokens, positions, sequence ids and logits flags must have the same length");
        return XGLM_ERR_INPUT;
    }
    int n_rows = 0;
    for (int i = 0; i < n; ++i) {
        const std::string at = "batch token " + std::to_string(i) + ": ";
        if (batch.tokens[i] < 0 || batch.tokens[i] >= hp.n_vocab) {
            fail(error, at + "token id " + std::to_string(batch.tokens[i]) + " is outside the vocabulary [0, " +
                            std::to_string(hp.n_vocab) + ")");
            return XGLM_ERR_INPUT;
        }
        if (batch.pos[i] < 0 || batch.pos[i] >= hp.n_ctx_train) {
            fail(error, at + "position " + std::to_string(batch.pos[i]) + " is outside the model's context [0, " +
                            std::to_string(hp.n_ctx_train) + "); XGLM's absolute positions cannot be shifted, truncate the input");
            return XGLM_ERR_INPUT;
        }
        if (batch.seq[i] < 0 || batch.seq[i] >= XGLM_MAX_SEQ) {
            fail(error, at + "sequence id " + std::to_string(batch.seq[i]) + " is outside [0, " + std::to_string(XGLM_MAX_SEQ) + ")");
            return XGLM_ERR_INPUT;
        }
        if (batch.want_logits[i]) logits_row[i] = n_rows++;
    }
    {
        // a (sequence, position) pair may be cached only once
        std::vector<std::pair<int32_t, int32_t>> seen;
        for (int i = 0; i < n; ++i) seen.emplace_back(batch.seq[i], batch.pos[i]);
        std::sort(seen.begin(), seen.end());
        const auto dup = std::adjacent_find(seen.begin(), seen.end());
        if (dup != seen.end()) {
            fail(error, "position " + std::to_string(dup->second) + " of sequence " + std::to_string(dup->first) +
                            " appears twice in the batch");
            return XGLM_ERR_INPUT;
        }
        for (const auto & c : lctx->cells) {
            if (!c.used()) continue;
            for (int i = 0; i < n; ++i) {
                if ((c.seq >> batch.seq[i] & 1) && c.pos == batch.pos[i]) {
                    fail(error, "position " + std::to_string(batch.pos[i]) + " of sequence " + std::to_string(batch.seq[i]) +
                                    " is already in the KV cache; remove it first (kvRemove)");
                    return XGLM_ERR_INPUT;
                }
            }
        }
    }
    const bool one_ubatch = n <= static_cast<int>(lctx->params.n_ubatch) && n_rows <= static_cast<int>(lctx->params.n_outputs);
    if (!one_ubatch) lctx->logits.resize(static_cast<size_t>(n_rows) * hp.n_vocab);

    // ubatches: at most n_ubatch tokens and n_outputs logits rows each
    int i0 = 0, row0 = 0;
    while (i0 < n) {
        int i1 = i0, rows = 0;
        while (i1 < n && i1 - i0 < static_cast<int>(lctx->params.n_ubatch)) {
            if (batch.want_logits[i1]) {
                if (rows == static_cast<int>(lctx->params.n_outputs)) break;
                ++rows;
            }
            ++i1;
        }
        if (lctx->abort_requested.load()) return fail(error, "evaluation aborted"), XGLM_ABORTED;
        const xglm_status st = decode_ubatch(lctx, batch, i0, i1, row0, one_ubatch, error);
        if (st != XGLM_OK) {
            lctx->logits.clear();
            lctx->logits_data = nullptr;
            return st;
        }
        i0 = i1;
        row0 += rows;
    }
    lctx->logits_row.swap(logits_row);
    return XGLM_OK;
}

const float * xglm_get_logits(const xglm_context * ctx, int32_t i) {
    if (i < 0 || i >= static_cast<int32_t>(ctx->logits_row.size()) || ctx->logits_row[i] < 0) return nullptr;
    return ctx->logits_data + static_cast<size_t>(ctx->logits_row[i]) * ctx->model->hparams.n_vocab;
}

const std::vector<float> * xglm_get_activation(const xglm_context * ctx, const std::string & name) {
    auto it = ctx->activations.find(name);
    return it == ctx->activations.end() ? nullptr : &it->second;
}
