// Internal to xglm.cpp and xglm-decode.cpp: the model's weights and the context's state.
#pragma once

#include <sys/mman.h>

#include <atomic>

#include "ggml-alloc.h"
#include "ggml-backend.h"
#include "ggml-cpu.h"
#include "gguf.h"
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
        if (mapping) munmap(mapping, mapping_size);
        if (ctx_owned) ggml_free(ctx_owned);
        if (ctx_meta) ggml_free(ctx_meta);
        if (gguf) gguf_free(gguf);
    }
};
