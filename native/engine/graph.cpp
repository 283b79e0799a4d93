// The forward graph of XGLM (docs/architecture.md, “Numerics”): one ggml graph per ubatch shape.
#include <algorithm>
#include <cmath>
#include <cstdio>

#include "attention.h"
#include "decode-gemv.h"
#include "gelu.h"
#include "xglm-impl.h"

size_t xglm_graph_size(const xglm_hparams & hp) { return std::max<size_t>(1024, 40 * hp.n_layer + 64); }

namespace {

ggml_tensor * layer_norm(ggml_context * ctx, ggml_tensor * x, ggml_tensor * w, ggml_tensor * b, float eps) {
    x = ggml_norm(ctx, x, eps);
    return ggml_add(ctx, ggml_mul(ctx, x, w), b);
}

// Whether the decode-gemv op can take all four products of a layer for this ubatch: repacked
// Q4_0 weights or Q8_0 ones in our 8-row layout (any token count: a decode token, one per active
// sequence, a prompt's ubatch), or plain Q8_0 ones (AVX2 kernel, up to q8_0_max_tokens). Then
// the layer runs as five nodes plus the cache writes: the norms, bias adds, GELU and residual
// adds ride inside the products (decode-gemv.h), which keep ggml's arithmetic for them. The
// K-quant layers of q4_k_m files mix types, so plain_layer takes them product by product
// (gemv_product); F16 keeps ggml's nodes (measured no faster as a custom op).
// Plain Q8_0 rows (no VNNI) take the op up to this many tokens (decode, batched decode); from
// there ggml's kernels
// (llamafile's tinyBLAS) are as fast or faster: 564M q8_0, 2 threads, Zen 4, bench/step.ts
// prefill shape: 0.83x ggml's time at 1 token, 0.78x at 4, 0.98x at 8, 1.02x at 16, 1.10x at 32.
constexpr int64_t q8_0_max_tokens = 8;

bool fusable_layer(const xglm_kernel_plan & plan, const xglm_layer & l, const ggml_tensor * x) {
    if (x->type != GGML_TYPE_F32 || !ggml_is_contiguous(x)) return false;
    for (const auto & [w, b] : {std::pair{l.attn_qkv, l.attn_qkv_b}, std::pair{l.attn_output, l.attn_output_b},
                                std::pair{l.ffn_up, l.ffn_up_b}, std::pair{l.ffn_down, l.ffn_down_b}}) {
        // Q8_0 in our 8-row layout (repacked at load where the plan had the VNNI kernel): always,
        // at any token count (ggml cannot read it)
        const bool planned = (w->type == GGML_TYPE_Q4_0 && plan.gemv_q4_0) || xglm_is_q8_0x8(w) ||
                             (w->type == GGML_TYPE_Q8_0 && plan.gemv_q8_0 && x->ne[1] <= q8_0_max_tokens);
        if (!planned || !xglm_decode_gemv_weight_usable(w, b)) return false;
    }
    return true;
}

ggml_tensor * contiguous(ggml_context * ctx, ggml_tensor * x) { return ggml_is_contiguous(x) ? x : ggml_cont(ctx, x); }

// Whether a product of a layer that is not fused goes through decode-gemv: Q8_0 in our 8-row
// layout always (the only op that reads it; such a layer is unfused when another of its weights
// keeps it off that path, e.g. a Q6_K ffn_down beside Q8_0 matrices too narrow for Q6_K); the K-quant weights of q4_k_m files (Q4_K as ggml repacks it, Q5_K, Q6_K) where
// the plan has their VNNI kernels.
bool gemv_product(const xglm_kernel_plan & plan, const ggml_tensor * w, const ggml_tensor * b = nullptr) {
    const bool k_quant = w->type == GGML_TYPE_Q4_K || w->type == GGML_TYPE_Q5_K || w->type == GGML_TYPE_Q6_K;
    return xglm_is_q8_0x8(w) || (k_quant && plan.gemv_k && xglm_decode_gemv_weight_usable(w, b));
}

ggml_tensor * product(const xglm_kernel_plan & plan, ggml_context * ctx, ggml_tensor * w, ggml_tensor * x) {
    if (gemv_product(plan, w)) return xglm_decode_gemv(ctx, w, contiguous(ctx, x), nullptr);
    return ggml_mul_mat(ctx, w, x);
}

ggml_tensor * linear(const xglm_kernel_plan & plan, ggml_context * ctx, ggml_tensor * x, ggml_tensor * w, ggml_tensor * b) {
    if (gemv_product(plan, w, b)) return xglm_decode_gemv(ctx, w, contiguous(ctx, x), b);
    return ggml_add(ctx, ggml_mul_mat(ctx, w, x), b);
}

// A decode-gemv product's extras as the plan has them: its kernel form, and the layer norm
// (norm_w, norm_b) folded in before it when given.
xglm_gemv_fuse gemv_fuse(const xglm_kernel_plan & plan, ggml_tensor * norm_w = nullptr, ggml_tensor * norm_b = nullptr,
                         float eps = 0.0f) {
    xglm_gemv_fuse f;
    f.vnni = plan.vnni;
    if (norm_w) f.norm_w = norm_w, f.norm_b = norm_b, f.norm_eps = eps, f.norm_isa = plan.isa;
    return f;
}

// The weight types decode-gemv takes, as XGLM_LOG's lines name them.
const char * gemv_type_label(ggml_type t) {
    switch (t) {
        case GGML_TYPE_Q4_0: return "Q4_0";
        case GGML_TYPE_Q8_0: return "Q8_0";
        case GGML_TYPE_Q6_K: return "Q6_K";
        default:             return ggml_type_name(t);
    }
}

void name(ggml_tensor * t, const char * what, int il) {
    if (il < 0) {
        ggml_set_name(t, what);
    } else {
        ggml_format_name(t, "%s-%d", what, il);
    }
}


// What the layers of one graph build share.
struct layer_graph {
    ggml_context *        ctx;
    ggml_cgraph *         gf;
    const ubatch_inputs * in;
    const xglm_context *  lctx;
    int                   n_tokens;
    int                   n_kv;
    int                   n_custom_attn;  // layers attending through attention.h's op
    int                   n_plain_gemv;   // products of unfused layers through decode-gemv
};

// Self-attention of layer il from its q, k, v rows qkv [3*n_embd, n_tokens]: this ubatch's keys
// and values go into their KV cells, then softmax(q·kᵀ / sqrt(head_dim) + mask) · v over the
// first n_kv cells, as [n_embd, n_tokens].
ggml_tensor * self_attention(layer_graph & g, int il, ggml_tensor * qkv) {
    ggml_context *           ctx         = g.ctx;
    const ubatch_inputs *    in          = g.in;
    const xglm_hparams &     hp          = g.lctx->model->hparams;
    const xglm_kernel_plan & plan        = g.lctx->kernels;
    const int64_t            n_embd      = hp.n_embd;
    const int64_t            n_head      = hp.n_head;
    const int64_t            n_embd_head = n_embd / n_head;
    const int                n_tokens = g.n_tokens, n_kv = g.n_kv;

    name(qkv, "qkv", il);
    const size_t es = ggml_element_size(qkv);

    ggml_tensor * k_cur = ggml_view_2d(ctx, qkv, n_embd, n_tokens, qkv->nb[1], 1 * n_embd * es);
    ggml_tensor * v_cur = ggml_view_2d(ctx, qkv, n_embd, n_tokens, qkv->nb[1], 2 * n_embd * es);
    ggml_tensor * q     = ggml_view_3d(ctx, qkv, n_embd_head, n_head, n_tokens, n_embd_head * es, qkv->nb[1], 0);
    q                   = ggml_permute(ctx, q, 0, 2, 1, 3);  // [n_embd_head, n_tokens, n_head]

    ggml_tensor * kc = g.lctx->k_l[il];
    ggml_tensor * vc = g.lctx->v_l[il];
    ggml_tensor * k  = ggml_view_3d(ctx, kc, n_embd_head, n_kv, n_head, kc->nb[1],
                                    ggml_row_size(kc->type, n_embd_head), 0);  // [n_embd_head, n_kv, n_head]
    ggml_tensor * v  = ggml_view_3d(ctx, vc, n_embd_head, n_kv, n_head, vc->nb[1],
                                    ggml_row_size(vc->type, n_embd_head), 0);  // [n_embd_head, n_kv, n_head]

    // [n_embd_head, n_head, n_tokens]: over an F16 cache our op (attention.h), otherwise ggml's
    // flash attention. This ubatch's keys and values go into their cells first: by the op itself
    // for one token, else by set_rows.
    const float   kq_scale = 1.0f / std::sqrt(static_cast<float>(n_embd_head));
    const bool    custom   = plan.attention && xglm_attention_usable(q, k, v, in->mask);
    const bool    store    = custom && xglm_attention_can_store(q, k_cur, v_cur, in->kv_idxs);
    ggml_tensor * cur;
    if (!store) {
        ggml_build_forward_expand(g.gf, ggml_set_rows(ctx, kc, k_cur, in->kv_idxs));
        ggml_build_forward_expand(g.gf, ggml_set_rows(ctx, vc, v_cur, in->kv_idxs));
    }
    if (custom) {
        cur = store ? xglm_attention(ctx, q, k, v, in->mask, kq_scale, k_cur, v_cur, in->kv_idxs)
                    : xglm_attention(ctx, q, k, v, in->mask, kq_scale);
        ++g.n_custom_attn;
    } else {
        cur = ggml_flash_attn_ext(ctx, q, k, v, in->mask, kq_scale, 0.0f, 0.0f);
        ggml_flash_attn_ext_set_prec(cur, GGML_PREC_F32);
    }
    name(cur, "attn", il);
    return ggml_reshape_2d(ctx, cur, n_embd, n_tokens);
}

// One transformer layer in ggml's nodes, as in ggml's gpt-2 example: pre-norm self-attention
// and feed-forward (fc2(gelu(fc1(ln(x)))), exact erf GELU), each added to its input. The one
// custom op here is the bias + GELU of quantized weights (gelu.h) where the plan allows it.
ggml_tensor * plain_layer(layer_graph & g, const xglm_layer & layer, int il, ggml_tensor * inpL) {
    ggml_context *           ctx  = g.ctx;
    const xglm_kernel_plan & plan = g.lctx->kernels;
    const float              eps  = g.lctx->model->hparams.norm_eps;

    for (const auto & [w, b] : {std::pair{layer.attn_qkv, layer.attn_qkv_b}, std::pair{layer.attn_output, layer.attn_output_b},
                                std::pair{layer.ffn_up, layer.ffn_up_b}, std::pair{layer.ffn_down, layer.ffn_down_b}}) {
        g.n_plain_gemv += gemv_product(plan, w, b);
    }
    ggml_tensor * cur;
    ggml_tensor * qkv;  // [3*n_embd, n_tokens]
    if (gemv_product(plan, layer.attn_qkv, layer.attn_qkv_b)) {  // the norm folded in
        qkv = xglm_decode_gemv(ctx, layer.attn_qkv, inpL, layer.attn_qkv_b, gemv_fuse(plan, layer.attn_norm, layer.attn_norm_b, eps));
    } else {
        cur = layer_norm(ctx, inpL, layer.attn_norm, layer.attn_norm_b, eps);  // [n_embd, n_tokens]
        name(cur, "attn_norm", il);
        qkv = linear(plan, ctx, cur, layer.attn_qkv, layer.attn_qkv_b);
    }
    cur = self_attention(g, il, qkv);
    ggml_tensor * ffn_inp;
    if (gemv_product(plan, layer.attn_output, layer.attn_output_b)) {  // the residual add folded in
        xglm_gemv_fuse f = gemv_fuse(plan);
        f.residual       = inpL;
        ffn_inp          = xglm_decode_gemv(ctx, layer.attn_output, contiguous(ctx, cur), layer.attn_output_b, f);
    } else {
        cur = linear(plan, ctx, cur, layer.attn_output, layer.attn_output_b);  // [n_embd, n_tokens]
        name(cur, "attn_out", il);
        ffn_inp = ggml_add(ctx, cur, inpL);
    }
    name(ffn_inp, "ffn_inp", il);

    if (gemv_product(plan, layer.ffn_up, layer.ffn_up_b)) {  // the norm, bias and GELU folded in
        xglm_gemv_fuse f = gemv_fuse(plan, layer.ffn_norm, layer.ffn_norm_b, eps);
        f.gelu           = true;
        cur              = xglm_decode_gemv(ctx, layer.ffn_up, ffn_inp, layer.ffn_up_b, f);
    } else {
        cur = layer_norm(ctx, ffn_inp, layer.ffn_norm, layer.ffn_norm_b, eps);
        name(cur, "ffn_norm", il);
        cur = product(plan, ctx, layer.ffn_up, cur);  // [n_ff, n_tokens]
        name(cur, "ffn_up", il);
        // quantized weights: bias + GELU in one op on all threads (gelu.h); F32/F16: ggml's
        if (plan.gelu_bias && ggml_is_quantized(layer.ffn_up->type) && xglm_gelu_bias_usable(cur, layer.ffn_up_b)) {
            cur = xglm_gelu_bias(ctx, cur, layer.ffn_up_b);
        } else {
            cur = ggml_gelu_erf(ctx, ggml_add(ctx, cur, layer.ffn_up_b));
        }
    }
    name(cur, "ffn_gelu", il);
    if (gemv_product(plan, layer.ffn_down, layer.ffn_down_b)) {  // the residual add folded in
        xglm_gemv_fuse f = gemv_fuse(plan);
        f.residual       = ffn_inp;
        return xglm_decode_gemv(ctx, layer.ffn_down, cur, layer.ffn_down_b, f);
    }
    cur = linear(plan, ctx, cur, layer.ffn_down, layer.ffn_down_b);  // [n_embd, n_tokens]
    name(cur, "ffn_out", il);
    return ggml_add(ctx, cur, ffn_inp);
}

// The same layer over repacked Q4_0 or plain Q8_0 weights (fusable_layer): its four products are
// decode-gemv ops that fold in the norms before and the bias adds, GELU and residual adds after,
// so that the layer is five nodes plus the cache writes instead of ~20 (decode-gemv.h).
ggml_tensor * fused_layer(layer_graph & g, const xglm_layer & layer, int il, ggml_tensor * inpL) {
    ggml_context *           ctx  = g.ctx;
    const xglm_kernel_plan & plan = g.lctx->kernels;
    const float              eps  = g.lctx->model->hparams.norm_eps;

    const xglm_gemv_fuse qkv_f = gemv_fuse(plan, layer.attn_norm, layer.attn_norm_b, eps);
    ggml_tensor *        cur   = self_attention(g, il, xglm_decode_gemv(ctx, layer.attn_qkv, inpL, layer.attn_qkv_b, qkv_f));
    xglm_gemv_fuse       out_f = gemv_fuse(plan);
    out_f.residual             = inpL;
    ggml_tensor * ffn_inp      = xglm_decode_gemv(ctx, layer.attn_output, cur, layer.attn_output_b, out_f);  // + inpL
    name(ffn_inp, "ffn_inp", il);

    xglm_gemv_fuse up = gemv_fuse(plan, layer.ffn_norm, layer.ffn_norm_b, eps);
    up.gelu           = true;
    cur               = xglm_decode_gemv(ctx, layer.ffn_up, ffn_inp, layer.ffn_up_b, up);  // [n_ff, n_tokens]
    name(cur, "ffn_gelu", il);
    xglm_gemv_fuse down = gemv_fuse(plan);
    down.residual       = ffn_inp;
    return xglm_decode_gemv(ctx, layer.ffn_down, cur, layer.ffn_down_b, down);  // + ffn_inp: l_out
}

}  // namespace

ggml_cgraph * xglm_build_graph(xglm_context * lctx, int n_tokens, int n_kv, int n_outputs, ubatch_inputs * in) {
    const xglm_model &   model = *lctx->model;
    const xglm_hparams &     hp    = model.hparams;
    const float              eps   = hp.norm_eps;
    const xglm_kernel_plan & plan  = lctx->kernels;

    lctx->last_graph = graph_cache{};  // its tensors are about to be overwritten
    ggml_init_params ip = {lctx->buf_graph_meta.size(), lctx->buf_graph_meta.data(), true};
    ggml_context *   ctx = ggml_init(ip);
    ggml_cgraph *    gf  = ggml_new_graph_custom(ctx, xglm_graph_size(hp), false);

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
    const char * layer_type = nullptr;  // their weight type (the first layer's qkv)

    layer_graph lg{ctx, gf, in, lctx, n_tokens, n_kv, 0, 0};
    for (int il = 0; il < hp.n_layer; ++il) {
        const xglm_layer & layer = model.layers[il];
        if (fusable_layer(plan, layer, inpL)) {
            inpL = fused_layer(lg, layer, il, inpL);
            n_custom_gemv += 4;
            if (!layer_type) layer_type = gemv_type_label(layer.attn_qkv->type);
        } else {
            inpL = plain_layer(lg, layer, il, inpL);
        }
        name(inpL, "l_out", il);
        if (keep) ggml_set_output(inpL);
    }
    const int n_custom_attn = lg.n_custom_attn;

    // logits only for the rows asked for: the n_vocab-wide matmul is the largest one
    if (n_outputs > 0) {
        in->out_ids = ggml_new_tensor_1d(ctx, GGML_TYPE_I32, n_outputs);
        name(in->out_ids, "inp_out_ids", -1);
        ggml_set_input(in->out_ids);
        cur = ggml_get_rows(ctx, inpL, in->out_ids);  // [n_embd, n_outputs]
        // logits rows from Q6_K weights (decode: one per active sequence; scoring: one per
        // token): a custom op that overlaps the weight read with the dot products, unpacks each
        // weight block once for up to 8 rows and applies the final norm itself (unless the
        // normed rows are to be kept); XGLM_NO_CUSTOM_GEMV=1 keeps ggml's nodes (A/B tests)
        const ggml_type out_type = model.output->type;
        if (((plan.gemv_q6_k && out_type == GGML_TYPE_Q6_K) || (plan.gemv_q8_0 && out_type == GGML_TYPE_Q8_0 && n_outputs <= q8_0_max_tokens)) &&
            xglm_decode_gemv_usable(model.output, cur, nullptr)) {
            if (keep) {
                cur = layer_norm(ctx, cur, model.output_norm, model.output_norm_b, eps);
                name(cur, "result_norm", -1);
                ggml_set_output(cur);
            }
            const xglm_gemv_fuse f = keep ? gemv_fuse(plan) : gemv_fuse(plan, model.output_norm, model.output_norm_b, eps);
            cur = xglm_decode_gemv(ctx, model.output, cur, nullptr, f);  // [n_vocab, n_outputs]
            if (plan.log) std::fprintf(stderr, "xglm: logits through the %s decode-gemv op\n", gemv_type_label(out_type));
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
    if (n_custom_gemv > 0 && plan.log) {
        std::fprintf(stderr, "xglm: %d layer products through the %s decode-gemv op\n", n_custom_gemv, layer_type);
    }
    if (lg.n_plain_gemv > 0 && plan.log) {
        std::fprintf(stderr, "xglm: %d products of unfused layers through the decode-gemv op\n", lg.n_plain_gemv);
    }
    if (n_custom_attn > 0 && plan.log) {
        std::fprintf(stderr, "xglm: %d layers attend through the F16 attention op\n", n_custom_attn);
    }
    ggml_free(ctx);  // the tensors live in buf_graph_meta until the next build
    return gf;
}
