// XGLM model loading: GGUF → validated hyperparameters and weights, mapped without a copy
// (repacked matmul weights excepted). The KV cache is in context.cpp, the graph in graph.cpp.
// See xglm.h for the contract and docs/converting.md for the file layout.
#include "xglm-impl.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <fstream>
#include <set>
#include <thread>

#include "ggml-alloc.h"
#include "ggml-backend.h"
#include "ggml-cpu.h"
#include "gguf.h"
#include "decode-gemv.h"

// ---------------------------------------------------------------------------------------
// model: the structs are in xglm-impl.h

namespace {

const char * const k_reconvert_hint = "convert the model again with 'xglm convert' (the layout xglm-node writes)";

// An integer key of any integer GGUF type; false when absent or not an integer.
bool gguf_int(const gguf_context * g, const char * key, int64_t * out) {
    const int64_t id = gguf_find_key(g, key);
    if (id < 0) return false;
    switch (gguf_get_kv_type(g, id)) {
        case GGUF_TYPE_UINT8:  *out = gguf_get_val_u8(g, id);  return true;
        case GGUF_TYPE_INT8:   *out = gguf_get_val_i8(g, id);  return true;
        case GGUF_TYPE_UINT16: *out = gguf_get_val_u16(g, id); return true;
        case GGUF_TYPE_INT16:  *out = gguf_get_val_i16(g, id); return true;
        case GGUF_TYPE_UINT32: *out = gguf_get_val_u32(g, id); return true;
        case GGUF_TYPE_INT32:  *out = gguf_get_val_i32(g, id); return true;
        case GGUF_TYPE_UINT64: *out = static_cast<int64_t>(gguf_get_val_u64(g, id)); return true;
        case GGUF_TYPE_INT64:  *out = gguf_get_val_i64(g, id); return true;
        default: return false;
    }
}

bool gguf_float(const gguf_context * g, const char * key, float * out) {
    const int64_t id = gguf_find_key(g, key);
    if (id < 0) return false;
    switch (gguf_get_kv_type(g, id)) {
        case GGUF_TYPE_FLOAT32: *out = gguf_get_val_f32(g, id); return true;
        case GGUF_TYPE_FLOAT64: *out = static_cast<float>(gguf_get_val_f64(g, id)); return true;
        default: return false;
    }
}

// A required positive dimension key, within a sane bound.
bool require_dim(const gguf_context * g, const char * key, int64_t max, int32_t * out, std::string * error) {
    int64_t v = 0;
    if (!gguf_int(g, key, &v)) {
        return xglm_fail(error, std::string("GGUF key ") + key + " is missing or not an integer; " + k_reconvert_hint);
    }
    if (v <= 0 || v > max) {
        return xglm_fail(error, std::string("GGUF key ") + key + " = " + std::to_string(v) + " is out of range (1.." +
                               std::to_string(max) + "); the file is damaged or not an XGLM model");
    }
    *out = static_cast<int32_t>(v);
    return true;
}

bool is_weight_type(ggml_type t) {
    switch (t) {
        case GGML_TYPE_F32: case GGML_TYPE_F16: case GGML_TYPE_BF16: case GGML_TYPE_Q8_0:
        case GGML_TYPE_Q6_K: case GGML_TYPE_Q5_K: case GGML_TYPE_Q5_0: case GGML_TYPE_Q4_K:
        case GGML_TYPE_Q4_0: case GGML_TYPE_Q5_1: case GGML_TYPE_Q4_1: case GGML_TYPE_Q3_K:
        case GGML_TYPE_Q2_K:
            return true;
        default:
            return false;
    }
}

std::string shape_str(const int64_t * ne, int n) {
    std::string s = "[";
    for (int i = 0; i < n; ++i) s += (i ? ", " : "") + std::to_string(ne[i]);
    return s + "]";
}

// Looks up a tensor, checks its shape and type, and marks it as used.
struct tensor_loader {
    ggml_context *        ctx;
    std::set<std::string> used;
    std::string *         error;
    bool                  ok = true;

    ggml_tensor * get(const std::string & name, std::vector<int64_t> shape, bool matrix, bool required = true) {
        if (!ok) return nullptr;
        ggml_tensor * t = ggml_get_tensor(ctx, name.c_str());
        if (t == nullptr) {
            if (required) ok = xglm_fail(error, "tensor " + name + " is missing; " + k_reconvert_hint);
            return nullptr;
        }
        used.insert(name);
        int64_t want[4] = {1, 1, 1, 1};
        for (size_t i = 0; i < shape.size(); ++i) want[i] = shape[i];
        for (int i = 0; i < 4; ++i) {
            if (t->ne[i] != want[i]) {
                ok = xglm_fail(error, "tensor " + name + " has shape " + shape_str(t->ne, ggml_n_dims(t)) + ", expected " +
                                     shape_str(want, static_cast<int>(shape.size())) + " from the hyperparameters; " +
                                     k_reconvert_hint);
                return nullptr;
            }
        }
        const bool type_ok = matrix ? is_weight_type(t->type) : t->type == GGML_TYPE_F32;
        if (!type_ok) {
            ok = xglm_fail(error, "tensor " + name + " has type " + ggml_type_name(t->type) + ", which xglm-node does not " +
                                 (matrix ? "run; use f32, f16, bf16, q8_0, q6_k, q5_k, q5_0, q4_k or q4_0"
                                         : "accept for a 1-D tensor (must be f32)") + "; " + k_reconvert_hint);
            return nullptr;
        }
        return t;
    }
};

// The sinusoid table of transformers' XGLMSinusoidalPositionalEmbedding, rows 2..n_ctx+1
// (row t here is used by the token at 0-based sequence index t). float32 like PyTorch.
std::vector<float> sinusoid_table(int n_embd, int n_ctx) {
    std::vector<float> table(static_cast<size_t>(n_embd) * n_ctx, 0.0f);
    const int    half = n_embd / 2;
    const double step = std::log(10000.0) / (half - 1);
    std::vector<float> freq(half);
    for (int i = 0; i < half; ++i) freq[i] = static_cast<float>(std::exp(-static_cast<double>(i) * step));
    for (int t = 0; t < n_ctx; ++t) {
        float *     row = table.data() + static_cast<size_t>(t) * n_embd;
        const float p   = static_cast<float>(t + 2);
        for (int i = 0; i < half; ++i) {
            const float arg = p * freq[i];
            row[i]          = static_cast<float>(std::sin(static_cast<double>(arg)));
            row[half + i]   = static_cast<float>(std::cos(static_cast<double>(arg)));
        }
        // an odd n_embd leaves the last column zero, as transformers pads it
    }
    return table;
}

// Whether the CPU backend's extra buffer type `buft` runs `w` as the weight of a matmul
// (the same probe llama.cpp makes before placing a weight in a repacked buffer).
bool repack_supported(ggml_backend_buffer_type_t buft, ggml_tensor * w) {
    ggml_init_params ip = {ggml_tensor_overhead() * 4, nullptr, true};
    ggml_context *   ctx = ggml_init(ip);
    if (!ctx) return false;
    ggml_tensor * x  = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, w->ne[0], 16);
    ggml_tensor * op = ggml_mul_mat(ctx, w, x);
    ggml_backend_buffer_t dummy = ggml_backend_buft_alloc_buffer(buft, 0);
    ggml_backend_buffer_t saved = w->buffer;
    w->buffer                   = dummy;
    const bool ok               = ggml_backend_dev_supports_op(xglm_cpu_device(), op);
    w->buffer                   = saved;
    ggml_backend_buffer_free(dummy);
    ggml_free(ctx);
    return ok;
}

}  // namespace

xglm_model * xglm_model_load(const std::string & path, const xglm_model_params & params, std::string * error) {
    auto model = std::make_unique<xglm_model>();
    auto & hp  = model->hparams;
    auto progress = [&](float f) { return !params.progress || params.progress(f); };

    // 1. metadata and tensor descriptions (no data is read)
    {
        if (std::string why; !xglm_file_exists(path, &why)) {
            xglm_fail(error, "cannot open " + path + ": " + why + "; check the path");
            return nullptr;
        }
        gguf_init_params gp = {true, &model->ctx_meta};
        model->gguf         = gguf_init_from_file(path.c_str(), gp);
        if (!model->gguf) {
            xglm_fail(error, path + " is not a valid GGUF file (bad magic, version or truncated header); " + k_reconvert_hint);
            return nullptr;
        }
    }
    const gguf_context * g = model->gguf;
    {
        const int64_t id = gguf_find_key(g, "general.architecture");
        if (id < 0 || gguf_get_kv_type(g, id) != GGUF_TYPE_STRING) {
            xglm_fail(error, path + " has no general.architecture; " + k_reconvert_hint);
            return nullptr;
        }
        const std::string arch = gguf_get_val_str(g, id);
        if (arch != "xglm") {
            xglm_fail(error, path + " holds a '" + arch + "' model; xglm-node runs only architecture 'xglm'");
            return nullptr;
        }
        const int64_t name_id = gguf_find_key(g, "general.name");
        if (name_id >= 0 && gguf_get_kv_type(g, name_id) == GGUF_TYPE_STRING) hp.name = gguf_get_val_str(g, name_id);
        int64_t ftype = -1;
        if (gguf_int(g, "general.file_type", &ftype)) hp.file_type = static_cast<int32_t>(ftype);
    }
    if (!require_dim(g, "xglm.context_length", 1 << 20, &hp.n_ctx_train, error) ||
        !require_dim(g, "xglm.embedding_length", 1 << 16, &hp.n_embd, error) ||
        !require_dim(g, "xglm.feed_forward_length", 1 << 18, &hp.n_ff, error) ||
        !require_dim(g, "xglm.block_count", 1024, &hp.n_layer, error) ||
        !require_dim(g, "xglm.attention.head_count", 1024, &hp.n_head, error)) {
        return nullptr;
    }
    int64_t n_head_kv = hp.n_head;
    if (gguf_int(g, "xglm.attention.head_count_kv", &n_head_kv) && n_head_kv != hp.n_head) {
        xglm_fail(error, "xglm.attention.head_count_kv = " + std::to_string(n_head_kv) + " differs from head_count = " +
                        std::to_string(hp.n_head) + "; XGLM has no grouped-query attention; " + k_reconvert_hint);
        return nullptr;
    }
    if (hp.n_embd % hp.n_head != 0 || hp.n_embd % 2 != 0) {
        xglm_fail(error, "embedding_length " + std::to_string(hp.n_embd) + " is not an even multiple of head_count " +
                        std::to_string(hp.n_head) + "; the file is damaged");
        return nullptr;
    }
    if (!gguf_float(g, "xglm.attention.layer_norm_epsilon", &hp.norm_eps) || !(hp.norm_eps > 0 && hp.norm_eps < 1)) {
        xglm_fail(error, std::string("GGUF key xglm.attention.layer_norm_epsilon is missing or not in (0, 1); ") + k_reconvert_hint);
        return nullptr;
    }
    // Optional: every released XGLM scales its embeddings by sqrt(d_model).
    hp.embd_scale = std::sqrt(static_cast<float>(hp.n_embd));
    if (gguf_find_key(g, "xglm.embedding_scale") >= 0 &&
        (!gguf_float(g, "xglm.embedding_scale", &hp.embd_scale) || !(hp.embd_scale > 0 && std::isfinite(hp.embd_scale)))) {
        xglm_fail(error, std::string("GGUF key xglm.embedding_scale is not a positive float; ") + k_reconvert_hint);
        return nullptr;
    }

    // 2. tensors: names, shapes and types
    {
        ggml_tensor * te = ggml_get_tensor(model->ctx_meta, "token_embd.weight");
        if (te == nullptr) {
            xglm_fail(error, std::string("tensor token_embd.weight is missing; ") + k_reconvert_hint);
            return nullptr;
        }
        hp.n_vocab = static_cast<int32_t>(te->ne[1]);
        const int64_t tok_id = gguf_find_key(g, "tokenizer.ggml.tokens");
        if (tok_id >= 0 && (gguf_get_kv_type(g, tok_id) != GGUF_TYPE_ARRAY ||
                            static_cast<int64_t>(gguf_get_arr_n(g, tok_id)) != hp.n_vocab)) {
            xglm_fail(error, "tokenizer.ggml.tokens has " + std::to_string(gguf_get_arr_n(g, tok_id)) +
                            " entries but token_embd.weight has " + std::to_string(hp.n_vocab) + " rows; " + k_reconvert_hint);
            return nullptr;
        }
    }
    const int64_t n_embd = hp.n_embd, n_ff = hp.n_ff, n_vocab = hp.n_vocab;
    tensor_loader tl{model->ctx_meta, {}, error};
    model->token_embd    = tl.get("token_embd.weight", {n_embd, n_vocab}, true);
    model->position_embd = tl.get("position_embd.weight", {n_embd, hp.n_ctx_train}, true, false);
    model->output        = tl.get("output.weight", {n_embd, n_vocab}, true, false);
    model->output_norm   = tl.get("output_norm.weight", {n_embd}, false);
    model->output_norm_b = tl.get("output_norm.bias", {n_embd}, false);
    if (model->position_embd && model->position_embd->type != GGML_TYPE_F32 && model->position_embd->type != GGML_TYPE_F16) {
        xglm_fail(error, std::string("position_embd.weight must be f32 or f16; ") + k_reconvert_hint);
        return nullptr;
    }
    model->layers.resize(hp.n_layer);
    for (int il = 0; il < hp.n_layer && tl.ok; ++il) {
        auto &            l = model->layers[il];
        const std::string b = "blk." + std::to_string(il) + ".";
        l.attn_norm     = tl.get(b + "attn_norm.weight", {n_embd}, false);
        l.attn_norm_b   = tl.get(b + "attn_norm.bias", {n_embd}, false);
        l.attn_qkv      = tl.get(b + "attn_qkv.weight", {n_embd, 3 * n_embd}, true);
        l.attn_qkv_b    = tl.get(b + "attn_qkv.bias", {3 * n_embd}, false);
        l.attn_output   = tl.get(b + "attn_output.weight", {n_embd, n_embd}, true);
        l.attn_output_b = tl.get(b + "attn_output.bias", {n_embd}, false);
        l.ffn_norm      = tl.get(b + "ffn_norm.weight", {n_embd}, false);
        l.ffn_norm_b    = tl.get(b + "ffn_norm.bias", {n_embd}, false);
        l.ffn_up        = tl.get(b + "ffn_up.weight", {n_embd, n_ff}, true);
        l.ffn_up_b      = tl.get(b + "ffn_up.bias", {n_ff}, false);
        l.ffn_down      = tl.get(b + "ffn_down.weight", {n_ff, n_embd}, true);
        l.ffn_down_b    = tl.get(b + "ffn_down.bias", {n_embd}, false);
    }
    if (!tl.ok) return nullptr;
    if (!model->output) model->output = model->token_embd;
    const int64_t n_tensors = gguf_get_n_tensors(g);
    if (static_cast<size_t>(n_tensors) != tl.used.size()) {
        for (int64_t i = 0; i < n_tensors; ++i) {
            if (!tl.used.count(gguf_get_tensor_name(g, i))) {
                xglm_fail(error, std::string("unexpected tensor ") + gguf_get_tensor_name(g, i) +
                                " (not part of an XGLM model, or more layers than xglm.block_count); " + k_reconvert_hint);
                return nullptr;
            }
        }
    }

    // 3. map the file; every tensor's bytes must lie inside it
    {
        void * addr = xglm_map_file(path, &model->mapping_size, error);
        if (addr == nullptr) return nullptr;
        model->mapping = addr;
    }
    const size_t data_offset = gguf_get_data_offset(g);
    auto tensor_data = [&](int64_t i) {
        return static_cast<uint8_t *>(model->mapping) + data_offset + gguf_get_tensor_offset(g, i);
    };
    for (int64_t i = 0; i < n_tensors; ++i) {
        const size_t start = data_offset + gguf_get_tensor_offset(g, i);
        const size_t end   = start + gguf_get_tensor_size(g, i);
        // The mapping is page-aligned, so this is the data's address alignment: f32 values and
        // the fp16 scales of quantized blocks are read in place (a general.alignment of 1 or 2
        // would leave them misaligned, undefined behaviour in ggml's kernels and repacking).
        if (start % 4 != 0) {
            xglm_fail(error, std::string("tensor ") + gguf_get_tensor_name(g, i) + " starts at byte " + std::to_string(start) +
                            ", not a multiple of 4 (general.alignment is too small); " + k_reconvert_hint);
            return nullptr;
        }
        if (end > model->mapping_size) {
            xglm_fail(error, std::string("tensor ") + gguf_get_tensor_name(g, i) + " ends at byte " + std::to_string(end) +
                            " but the file has " + std::to_string(model->mapping_size) +
                            " bytes: the file is truncated; download or convert it again");
            return nullptr;
        }
    }
    model->buf_mapped = ggml_backend_cpu_buffer_from_ptr(model->mapping, model->mapping_size);
    if (!model->buf_mapped) {
        xglm_fail(error, "ggml could not wrap the mapped file in a buffer");
        return nullptr;
    }

    // 4. choose the matmul weights that go into a repacked buffer
    std::vector<ggml_tensor **> repack;
    ggml_backend_buffer_type_t  repack_buft = nullptr;
    if (params.use_repack) {
        auto get_extra = reinterpret_cast<ggml_backend_dev_get_extra_bufts_t>(xglm_cpu_proc("ggml_backend_dev_get_extra_bufts"));
        ggml_backend_buffer_type_t * extra = get_extra ? get_extra(xglm_cpu_device()) : nullptr;
        for (; extra && *extra && !repack_buft; ++extra) {
            if (std::strcmp(ggml_backend_buft_name(*extra), "CPU_REPACK") == 0) repack_buft = *extra;
        }
        for (auto & l : model->layers) {
            for (ggml_tensor ** w : {&l.attn_qkv, &l.attn_output, &l.ffn_up, &l.ffn_down}) {
                if (repack_buft && repack_supported(repack_buft, *w)) repack.push_back(w);
            }
        }
    }
    // 4b. the Q8_0 layer weights that our AVX-512 VNNI kernel takes in its own 8-row layout
    // (decode-gemv.h), where a context created now would run it: the plan decided from the same
    // ggml variant and environment (XGLM_KERNELS=ggml or avx2 at load keeps the plain rows)
    std::vector<ggml_tensor **> own_q8;
    xglm_kernel_plan            plan;
    std::string                 plan_error;
    const bool                  planned = xglm_kernel_plan_from_env(xglm_backend_kernel_isa(), xglm_backend_kernel_vnni(), &plan, &plan_error);
    {
        const bool vnni_q8 = params.use_repack && planned && plan.gemv_q8_0 && plan.vnni;
        for (auto & l : model->layers) {
            for (ggml_tensor ** w : {&l.attn_qkv, &l.attn_output, &l.ffn_up, &l.ffn_down}) {
                if (vnni_q8 && xglm_q8_0x8_possible(*w) && std::find(repack.begin(), repack.end(), w) == repack.end()) own_q8.push_back(w);
            }
        }
    }
    // 4c. a Q6_K tied embedding (q4_0, q4_k_m files), which the logits op streams with software
    // prefetch, copied into anonymous memory, where Linux backs it with transparent huge pages:
    // mapped from the file it has 4 KB pages, a TLB miss every 4 KB of the 210 MB read per token
    // (564M, Zen 4, bench/ab.ts: decode q4_0 1.081x, q4_k_m 1.184x). F16 embeddings (f16 and q8_0
    // files), which ggml's kernels read, measured 0.975x and 1.016x copied: they stay mapped.
    std::vector<ggml_tensor **> own_plain;
#ifdef __linux__
    if (params.use_repack && planned && plan.gemv_q6_k && model->token_embd->type == GGML_TYPE_Q6_K) own_plain.push_back(&model->token_embd);
#endif
    const size_t n_owned = repack.size() + own_q8.size() + own_plain.size() + (model->position_embd ? 0 : 1);
    if (n_owned > 0) {
        ggml_init_params ip = {ggml_tensor_overhead() * (n_owned + 1), nullptr, true};
        model->ctx_owned    = ggml_init(ip);
    }

    // 5. point every tensor that stays in the file at its bytes (no copy)
    std::set<const ggml_tensor *> repacked;
    for (ggml_tensor ** w : repack) repacked.insert(*w);
    for (ggml_tensor ** w : own_q8) repacked.insert(*w);
    for (ggml_tensor ** w : own_plain) repacked.insert(*w);
    for (int64_t i = 0; i < n_tensors; ++i) {
        ggml_tensor * t = ggml_get_tensor(model->ctx_meta, gguf_get_tensor_name(g, i));
        if (repacked.count(t)) continue;
        if (ggml_backend_tensor_alloc(model->buf_mapped, t, tensor_data(i)) != GGML_STATUS_SUCCESS) {
            xglm_fail(error, std::string("tensor ") + ggml_get_name(t) + " is misaligned in the file; " + k_reconvert_hint);
            return nullptr;
        }
    }
    if (!progress(0.1f)) return xglm_fail(error, "loading was cancelled"), nullptr;

    // 6. repacked copies, owned: `weights` become copies in a buffer of `buft`, each set from the
    // file's bytes by `set`; the mapped originals are not read again, so their pages are dropped
    // from this process. ggml rearranges the blocks of 4 while setting the data; the embedding of
    // 4c is copied as it is; the Q8_0 weights of 4b take our layout in a plain CPU buffer (ggml
    // never reads them: the graph sends every product over them to decode-gemv).
    const size_t n_copies = repack.size() + own_q8.size() + own_plain.size();
    size_t       n_copied = 0;
    auto         own_copies = [&](const std::vector<ggml_tensor **> & weights, ggml_backend_buffer_type_t buft,
                          const std::function<void(ggml_tensor *, const uint8_t *)> & set) {
        std::vector<std::pair<ggml_tensor *, const uint8_t *>> copies;
        for (ggml_tensor ** w : weights) {
            const int64_t i = gguf_find_tensor(g, ggml_get_name(*w));
            ggml_tensor * c = ggml_dup_tensor(model->ctx_owned, *w);
            ggml_set_name(c, ggml_get_name(*w));
            copies.emplace_back(c, tensor_data(i));
            *w = c;
        }
        ggml_backend_buffer_t buf = ggml_backend_alloc_ctx_tensors_from_buft(model->ctx_owned, buft);
        if (!buf) return xglm_fail(error, "out of memory allocating repacked weights; load with repack disabled");
        xglm_advise_huge_pages(buf);  // before the copies below touch its pages
        model->bufs_owned.push_back(buf);
        for (const auto & [c, src] : copies) {
            set(c, src);
            xglm_drop_pages(src, ggml_nbytes(c));
            if (!progress(0.1f + 0.9f * ++n_copied / n_copies)) return xglm_fail(error, "loading was cancelled");
        }
        return true;
    };
    if (!repack.empty() &&
        !own_copies(repack, repack_buft, [](ggml_tensor * c, const uint8_t * src) { ggml_backend_tensor_set(c, src, 0, ggml_nbytes(c)); })) {
        return nullptr;
    }
    const bool tied = model->output == model->token_embd;  // the logits read the same copy
    if (!own_plain.empty() &&
        !own_copies(own_plain, ggml_backend_cpu_buffer_type(), [](ggml_tensor * c, const uint8_t * src) { std::memcpy(c->data, src, ggml_nbytes(c)); })) {
        return nullptr;
    }
    if (tied) model->output = model->token_embd;
    if (!own_q8.empty() && !own_copies(own_q8, ggml_backend_cpu_buffer_type(), [](ggml_tensor * c, const uint8_t * src) {
            xglm_repack_q8_0x8(src, c->data, c->ne[0], c->ne[1]);
            xglm_mark_q8_0x8(c);
        })) {
        return nullptr;
    }

    // 7. the position table, when the file leaves it out
    if (!model->position_embd) {
        const size_t table_bytes = sizeof(float) * static_cast<size_t>(n_embd) * static_cast<size_t>(hp.n_ctx_train);
        if (2 * table_bytes > xglm_physical_memory()) {
            xglm_fail(error, "the computed position table (" + std::to_string(n_embd) + " x " + std::to_string(hp.n_ctx_train) + ") needs " +
                            std::to_string(2 * table_bytes >> 20) + " MB, more memory than this machine has (" +
                            std::to_string(xglm_physical_memory() >> 20) + " MB); the file is damaged or not meant for this machine");
            return nullptr;
        }
        ggml_tensor * t = ggml_new_tensor_2d(model->ctx_owned, GGML_TYPE_F32, n_embd, hp.n_ctx_train);
        ggml_set_name(t, "position_embd.weight");
        ggml_backend_buffer_t buf = ggml_backend_buft_alloc_buffer(ggml_backend_cpu_buffer_type(), ggml_nbytes(t) + 64);
        if (!buf) return xglm_fail(error, "out of memory for the position table"), nullptr;
        model->bufs_owned.push_back(buf);
        ggml_backend_tensor_alloc(buf, t, ggml_backend_buffer_get_base(buf));
        const std::vector<float> table = sinusoid_table(hp.n_embd, hp.n_ctx_train);
        ggml_backend_tensor_set(t, table.data(), 0, ggml_nbytes(t));
        model->position_embd = t;
    }
    // the metadata (a 256k-entry vocabulary among it) is the tokenizer's business, not ours
    gguf_free(model->gguf);
    model->gguf = nullptr;
    progress(1.0f);
    return model.release();
}

void xglm_model_free(xglm_model * model) { delete model; }

const xglm_hparams & xglm_model_hparams(const xglm_model * model) { return model->hparams; }

std::vector<xglm_tensor_info> xglm_model_tensors(const xglm_model * model) {
    std::vector<xglm_tensor_info> out;
    auto add = [&](const ggml_tensor * t) {
        xglm_tensor_info info;
        info.name   = ggml_get_name(t);
        info.type   = ggml_type_name(t->type);
        info.buffer = t->buffer == model->buf_mapped ? "mmap"
                      : t->buffer ? ggml_backend_buffer_name(t->buffer) : "none";
        if (t->buffer != model->buf_mapped && std::strcmp(ggml_get_name(t), "position_embd.weight") == 0) {
            info.buffer = "computed";
        }
        for (int i = 0; i < 4; ++i) info.ne[i] = t->ne[i];
        out.push_back(info);
    };
    add(model->token_embd);
    add(model->position_embd);
    for (const auto & l : model->layers) {
        for (const ggml_tensor * t : {l.attn_norm, l.attn_norm_b, l.attn_qkv, l.attn_qkv_b, l.attn_output, l.attn_output_b,
                                      l.ffn_norm, l.ffn_norm_b, l.ffn_up, l.ffn_up_b, l.ffn_down, l.ffn_down_b}) {
            add(t);
        }
    }
    add(model->output_norm);
    add(model->output_norm_b);
    if (model->output != model->token_embd) add(model->output);
    return out;
}

size_t xglm_model_mapped_bytes(const xglm_model * model) { return model->mapping_size; }

size_t xglm_model_owned_bytes(const xglm_model * model) {
    size_t n = 0;
    for (auto * b : model->bufs_owned) n += ggml_backend_buffer_get_size(b);
    return n;
}

// xglm_physical_memory and xglm_physical_cores: platform.cpp
