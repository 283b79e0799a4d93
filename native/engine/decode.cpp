// Decoding: a batch is checked, split into ubatches of at most n_ubatch tokens and n_outputs
// logits rows, and each ubatch runs the graph of graph.cpp over the KV cells it is given.
#include <algorithm>
#include <chrono>
#include <cmath>

#include "xglm-impl.h"

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
        xglm_fail(error, "the KV cache is full (" + std::to_string(lctx->cells.size()) +
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
        ggml_cgraph * built = xglm_build_graph(lctx, n_tokens, n_kv, n_outputs, &fresh);
        if (!ggml_gallocr_alloc_graph(lctx->galloc, built)) {
            release_slots();
            xglm_fail(error, "out of memory for the compute buffers");
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
        xglm_fail(error, "evaluation aborted");
        return XGLM_ABORTED;
    }
    if (st != GGML_STATUS_SUCCESS) {
        release_slots();
        xglm_fail(error, std::string("ggml graph computation failed: ") + ggml_status_to_string(st));
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

    if (n == 0) return xglm_fail(error, "the batch is empty"), XGLM_ERR_INPUT;
    if (batch.pos.size() != batch.tokens.size() || batch.seq.size() != batch.tokens.size() ||
        batch.want_logits.size() != batch.tokens.size()) {
        xglm_fail(error, "tokens, positions, sequence ids and logits flags must have the same length");
        return XGLM_ERR_INPUT;
    }
    int n_rows = 0;
    for (int i = 0; i < n; ++i) {
        // built only for an error message, not per token
        auto at = [i] { return "batch token " + std::to_string(i) + ": "; };
        if (batch.tokens[i] < 0 || batch.tokens[i] >= hp.n_vocab) {
            xglm_fail(error, at() + "token id " + std::to_string(batch.tokens[i]) + " is outside the vocabulary [0, " +
                            std::to_string(hp.n_vocab) + ")");
            return XGLM_ERR_INPUT;
        }
        if (batch.pos[i] < 0 || batch.pos[i] >= hp.n_ctx_train) {
            xglm_fail(error, at() + "position " + std::to_string(batch.pos[i]) + " is outside the model's context [0, " +
                            std::to_string(hp.n_ctx_train) + "); XGLM's absolute positions cannot be shifted, truncate the input");
            return XGLM_ERR_INPUT;
        }
        if (batch.seq[i] < 0 || batch.seq[i] >= XGLM_MAX_SEQ) {
            xglm_fail(error, at() + "sequence id " + std::to_string(batch.seq[i]) + " is outside [0, " + std::to_string(XGLM_MAX_SEQ) + ")");
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
            xglm_fail(error, "position " + std::to_string(dup->second) + " of sequence " + std::to_string(dup->first) +
                            " appears twice in the batch");
            return XGLM_ERR_INPUT;
        }
        for (const auto & c : lctx->cells) {
            if (!c.used()) continue;
            for (int i = 0; i < n; ++i) {
                if ((c.seq >> batch.seq[i] & 1) && c.pos == batch.pos[i]) {
                    xglm_fail(error, "position " + std::to_string(batch.pos[i]) + " of sequence " + std::to_string(batch.seq[i]) +
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
        if (lctx->abort_requested.load()) return xglm_fail(error, "evaluation aborted"), XGLM_ABORTED;
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

