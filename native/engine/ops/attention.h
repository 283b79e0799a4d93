// Attention over an F16 KV cache as a ggml custom op, in place of ggml_flash_attn_ext.
//
// Why: for decode, ggml's CPU flash attention spends ~15% of a 564M q4_0 token (Zen 3, 2
// threads) on one query: per cell it converts, calls a 64-element F16 dot, rescales an F16
// accumulator and computes one expf. Here each (head, token) row gathers its visible cells,
// scores them with F32 dots (K converted by F16C), takes one max, exponentiates the scores
// eight at a time and accumulates V in F32.
//
// Only for ubatches of fewer than 64 tokens: from 64 on, ggml's flash attention switches to a
// tiled path (GEMM-like over query tiles) that is faster than per-row work; below it, ggml
// takes the per-cell path this op replaces (measured: 564M prefill of 512 tokens ~4% slower
// through this op, decode ~10% faster).
//
// Numerics: Q stays F32 (ggml rounds it to F16 first) and V accumulates in F32 (ggml in F16),
// so the result is closer to the exact attention than flash_attn_ext's, not bit-identical to
// it. A row's result depends only on its query and its visible cells in cell order, never on
// n_kv, the other rows of the ubatch or the thread count. Like ggml's own tiled and per-row
// paths, ubatches either side of the 64-token line round differently.
#pragma once

#include "ggml.h"

// Whether xglm_attention can replace flash attention here: fewer than 64 tokens, K and V F16
// views [head_dim, n_kv, n_head] whose rows are contiguous, head_dim one of 16, 32, 64, 128, q F32, the mask
// F16 [n_kv, n_tokens] (x86-64 only). Whether this CPU and the switches allow the op at all is
// the kernel plan's decision (kernel-plan.h).
bool xglm_attention_usable(const ggml_tensor * q, const ggml_tensor * k, const ggml_tensor * v, const ggml_tensor * mask);

// q [head_dim, n_tokens, n_head] (F32, any strides), k and v [head_dim, n_kv, n_head] (F16),
// mask [n_kv, n_tokens] (F16: 0 = visible, -inf = not; other values are added to the score)
// -> softmax(q·kᵀ·scale + mask)·v as [head_dim, n_head, n_tokens] F32, flash_attn_ext's layout.
// With k_cur, v_cur (F32 [head_dim·n_head], contiguous) and kv_idxs (I64 [1]) — one token only,
// see xglm_attention_can_store — the op first writes the token's K and V into cell kv_idxs[0]
// of k and v (as F16, rounded as ggml's set_rows), replacing two set_rows nodes.
ggml_tensor * xglm_attention(ggml_context * ctx, ggml_tensor * q, ggml_tensor * k, ggml_tensor * v, ggml_tensor * mask,
                             float scale, ggml_tensor * k_cur = nullptr, ggml_tensor * v_cur = nullptr,
                             ggml_tensor * kv_idxs = nullptr);

// Whether xglm_attention can store k_cur and v_cur itself (one token, F32 contiguous rows).
bool xglm_attention_can_store(const ggml_tensor * q, const ggml_tensor * k_cur, const ggml_tensor * v_cur,
                              const ggml_tensor * kv_idxs);
