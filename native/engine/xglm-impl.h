// Internal to the engine (model.cpp, context.cpp, graph.cpp, decode.cpp, generate.cpp): the model's
// weights, the context's state, and what those files share.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "ggml-alloc.h"
#include "ggml-backend.h"
#include "ggml-cpu.h"
#include "gguf.h"
#include "kernel-plan.h"
#include "xglm.h"

struct xglm_layer {
    ggml_tensor * attn_norm     = nullptr;  // [n_embd]
    ggml_tensor * attn_norm_b   = nullptr;  // [n_embd]
    ggml_tensor * attn_qkv      = nullptr;  // [n_embd, 3*n_embd]: q, k, v rows in that order
    ggml_tensor * attn_qkv_b    = nullptr;  // [3*n_embd]
    ggml_tensor * attn_output   = nullptr;  // [n_embd, n_embd]
    ggml_tensor * attn_output_b = nullptr;  // [n_embd]
    ggml_tensor * ffn_norm      = nullptr;  // [n_embd]
    ggml_tensor * ffn_norm_b    = nullptr;  // [n_embd]
    ggml_tensor * ffn_up        = nullptr;  // [n_embd, n_ff]   (fc1)
    ggml_tensor * ffn_up_b      = nullptr;  // [n_ff]
    ggml_tensor * ffn_down      = nullptr;  // [n_ff, n_embd]   (fc2)
    ggml_tensor * ffn_down_b    = nullptr;  // [n_embd]
};

// ---------------------------------------------------------------------------------------
// the operating system (platform.cpp): POSIX or Windows

// Maps a whole file read-only (path in UTF-8); nullptr and *error on failure.
// Whether path (UTF-8) names something that can be opened; else *why says what is wrong.
bool   xglm_file_exists(const std::string & path, std::string * why);
void * xglm_map_file(const std::string & path, size_t * size, std::string * error);
void   xglm_unmap_file(void * addr, size_t size);
// Tells the OS that these mapped pages are not needed again (advice only).
void   xglm_drop_pages(const void * addr, size_t size);
size_t xglm_page_size();

struct xglm_model {
    xglm_hparams hparams;

    ggml_tensor * token_embd    = nullptr;  // [n_embd, n_vocab], also the (tied) output matrix
    ggml_tensor * position_embd = nullptr;  // [n_embd, n_ctx_train]: row t = sinusoid of t+2
    ggml_tensor * output        = nullptr;  // [n_embd, n_vocab]: token_embd unless the file has output.weight
    ggml_tensor * output_norm   = nullptr;
    ggml_tensor * output_norm_b = nullptr;
    std::vector<xglm_layer> layers;

    gguf_context * gguf       = nullptr;  // only while loading
    ggml_context * ctx_meta   = nullptr;  // every tensor of the file; data points into the mapping
    ggml_context * ctx_owned  = nullptr;  // repacked copies and the computed position table
    void *         mapping    = nullptr;
    size_t         mapping_size = 0;
    ggml_backend_buffer_t buf_mapped = nullptr;
    std::vector<ggml_backend_buffer_t> bufs_owned;

    ~xglm_model() {
        for (auto * b : bufs_owned) ggml_backend_buffer_free(b);
        if (buf_mapped) ggml_backend_buffer_free(buf_mapped);
        if (mapping) xglm_unmap_file(mapping, mapping_size);
        if (ctx_owned) ggml_free(ctx_owned);
        if (ctx_meta) ggml_free(ctx_meta);
        if (gguf) gguf_free(gguf);
    }
};

// ---------------------------------------------------------------------------------------
// context (context.cpp)

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

    xglm_kernel_plan kernels;  // the custom ops its graphs use, decided at creation

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

// ---------------------------------------------------------------------------------------
// backend internals (backend.cpp)

// The CPU device after a successful xglm_backend_init.
ggml_backend_dev_t xglm_cpu_device();

// A function the CPU backend exports by name (ggml_threadpool_new, ...), or nullptr.
void * xglm_cpu_proc(const char * name);

// Asks the kernel to back a freshly allocated (untouched) host buffer with 2 MB pages
// (transparent huge pages, madvise mode): the repacked weights and the KV cache are streamed
// every token, and with 4 KB pages each page costs a TLB miss and restarts the hardware
// prefetcher. No effect where THP is off or the platform has no madvise; XGLM_NO_HUGE_PAGES=1
// disables it (A/B runs).
void xglm_advise_huge_pages(ggml_backend_buffer_t buf);

// The custom ops' code path for the ggml CPU variant in use (backend.cpp), decided once: the
// backend is initialised before any model or graph exists.
xglm_kernel_isa xglm_backend_kernel_isa();
// Whether that variant runs AVX-512 VNNI (the Q4_0 decode-gemv's VNNI kernels).
bool xglm_backend_kernel_vnni();

// Sets *error (when given) and returns false.
inline bool xglm_fail(std::string * error, const std::string & msg) {
    if (error) *error = msg;
    return false;
}

// KV cell bookkeeping over a cell array (context.cpp); the xglm_kv_* functions of xglm.h apply
// it to a context's cells.
void    xglm_cells_seq_rm(std::vector<xglm_kv_cell> & cells, int32_t seq, int32_t p0, int32_t p1);
void    xglm_cells_seq_cp(std::vector<xglm_kv_cell> & cells, int32_t seq_src, int32_t seq_dst, int32_t p0, int32_t p1);
int32_t xglm_cells_seq_pos_max(const std::vector<xglm_kv_cell> & cells, int32_t seq);

// ---------------------------------------------------------------------------------------
// graph (graph.cpp)

// Nodes of the largest graph (the metadata buffer is sized for it).
size_t xglm_graph_size(const xglm_hparams & hp);

// The XGLM forward pass for n_tokens tokens attending over the first n_kv cells, built in
// lctx->buf_graph_meta (invalidating lctx->last_graph); *in receives its input and output tensors.
ggml_cgraph * xglm_build_graph(xglm_context * lctx, int n_tokens, int n_kv, int n_outputs, ubatch_inputs * in);
