// XGLM inference over ggml: plain C++, no Node-API.
//
// Split like whisper.h: an xglm_model holds the read-only weights (mmap'd from a GGUF file,
// shareable by many contexts and threads); an xglm_context holds everything one run
// mutates (KV cache, compute buffers, threadpool, last logits). A context is used by one
// thread at a time; only xglm_context_abort may be called from another thread.
//
// Semantics: transformers' XGLMForCausalLM (docs/architecture.md, “Numerics”); file layout:
// docs/converting.md, “What is written”.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "ggml.h"

struct xglm_model;
struct xglm_context;

// ---------------------------------------------------------------------------------------
// backend: which ggml CPU code runs (process-wide; backend.cpp)
//
// A static build links one CPU backend compiled for the build machine. A distributable
// build (XGLM_BACKEND_DL) ships every ggml CPU variant as libggml-cpu-<name>.so beside the
// binary (the .node, or an executable linking the engine) and loads the best one this CPU
// supports; XGLM_CPU_VARIANT=<name> forces one.

struct xglm_backend_info {
    std::string              variant;   // "haswell", "x64", ... or "native" for a static build
    bool                     dynamic;   // variants loaded at run time
    std::vector<std::string> features;  // CPU features the chosen code uses ("AVX2", ...)
    std::vector<std::string> available; // variant libraries found beside the addon
    std::string              kernels;   // the custom ops' code path: "avx512", "avx2" or "none"
                                        // (none also under XGLM_KERNELS=ggml)
};

// Loads the CPU backend once per process (thread-safe). Returns nullptr and sets *error
// when no usable CPU backend exists (e.g. a forced variant this CPU cannot run).
const xglm_backend_info * xglm_backend_init(std::string * error);

// The kernel plan a context created now would get (the ggml variant in use and the
// environment: XGLM_KERNELS, XGLM_NO_CUSTOM_*): per kind of graph node, whether xglm-node's own
// op runs (`ours`) and which kernel, or why ggml's node does. false and *error for an unknown
// XGLM_KERNELS value.
struct xglm_kernel_plan_info {
    std::string isa;   // "avx512", "avx2" or "none": the ops' code path
    bool        vnni;  // the products' AVX-512 VNNI forms
    struct op {
        std::string node, detail;
        bool        ours;
    };
    std::vector<op> ops;
};
bool xglm_kernel_plan_now(xglm_kernel_plan_info * out, std::string * error);

// ---------------------------------------------------------------------------------------
// model

struct xglm_hparams {
    int32_t     n_vocab     = 0;
    int32_t     n_ctx_train = 0;  // max_position_embeddings
    int32_t     n_embd      = 0;  // d_model
    int32_t     n_ff        = 0;  // ffn_dim
    int32_t     n_layer     = 0;
    int32_t     n_head      = 0;
    float       norm_eps    = 1e-5f;
    float       embd_scale  = 1.0f;  // sqrt(d_model) when scale_embedding
    int32_t     file_type   = -1;    // general.file_type (llama_ftype), -1 if absent
    std::string name;                // general.name, may be empty
};

struct xglm_model_params {
    // Copy matmul weights that ggml's CPU backend can repack (Q4_0, Q4_K, ...) into its
    // interleaved layout, Q8_0 layer weights into xglm-node's 8-row layout where the kernel
    // plan has the AVX-512 VNNI products, and (Linux) a Q6_K output matrix into anonymous memory
    // for transparent huge pages: faster matmuls, at the cost of owning those bytes instead of
    // sharing the page cache.
    bool use_repack = true;
    // Called with a fraction in [0, 1] while loading; return false to cancel.
    std::function<bool(float)> progress;
};

// Loads a GGUF file; nullptr and *error on failure (the message says what to do).
xglm_model * xglm_model_load(const std::string & path, const xglm_model_params & params, std::string * error);
void         xglm_model_free(xglm_model * model);

const xglm_hparams & xglm_model_hparams(const xglm_model * model);

// Per weight: name, ggml type name, buffer ("mmap", "CPU_REPACK", "computed").
struct xglm_tensor_info {
    std::string name;
    std::string type;
    std::string buffer;
    int64_t     ne[4];
};
std::vector<xglm_tensor_info> xglm_model_tensors(const xglm_model * model);

// Bytes of weights mapped from the file and bytes copied into owned (repacked) buffers.
size_t xglm_model_mapped_bytes(const xglm_model * model);
size_t xglm_model_owned_bytes(const xglm_model * model);

// ---------------------------------------------------------------------------------------
// context

struct xglm_context_params {
    uint32_t  n_ctx     = 0;     // KV cells shared by all sequences; 0 = n_ctx_train
    uint32_t  n_ubatch  = 512;   // tokens per graph evaluation (long prompts are split)
    uint32_t  n_outputs = 32;    // logits rows per graph evaluation (bounds the output buffer)
    int32_t   n_threads = 0;     // 0 = number of physical cores
    ggml_type type_kv   = GGML_TYPE_F16;  // F16, F32 or Q8_0
    // Keep the residual stream of every layer of the last xglm_decode (xglm_get_activation):
    // for tests that compare hidden states against a reference.
    bool      keep_activations = false;
};

// Sequence ids are 0 .. XGLM_MAX_SEQ-1 (one bit each in a cell).
constexpr int XGLM_MAX_SEQ = 64;

xglm_context * xglm_context_new(std::shared_ptr<const xglm_model> model, const xglm_context_params & params,
                                std::string * error);
void           xglm_context_free(xglm_context * ctx);

const xglm_model * xglm_context_model(const xglm_context * ctx);
uint32_t           xglm_n_ctx(const xglm_context * ctx);
int32_t  xglm_n_threads(const xglm_context * ctx);

// A batch: token i is `tokens[i]` at 0-based sequence index `pos[i]` in sequence `seq[i]`;
// logits are kept for token i when want_logits[i] != 0.
struct xglm_batch {
    std::vector<int32_t> tokens;
    std::vector<int32_t> pos;
    std::vector<int32_t> seq;
    std::vector<uint8_t> want_logits;
};

enum xglm_status {
    XGLM_OK           = 0,
    XGLM_ABORTED      = 1,  // xglm_context_abort was called; the cache holds the tokens
                            // of the ubatches that completed
    XGLM_ERR_INPUT    = 2,  // invalid batch (message says which token and why)
    XGLM_ERR_KV_FULL  = 3,  // not enough free KV cells
    XGLM_ERR_COMPUTE  = 4,
};

// Evaluates a batch, adding its tokens to the KV cache. Splits it into ubatches.
xglm_status xglm_decode(xglm_context * ctx, const xglm_batch & batch, std::string * error);

// Sets or clears the abort flag (any thread). While it is set, xglm_decode stops between
// graph nodes and between ubatches and returns XGLM_ABORTED. The caller clears it.
void xglm_context_set_abort(xglm_context * ctx, bool abort);

// The logits row [n_vocab] of batch token i of the last xglm_decode, or nullptr if it was
// not asked for.
const float * xglm_get_logits(const xglm_context * ctx, int32_t i);

// With keep_activations: "inp_embd" [n_embd, n_tokens], "l_out-<il>" per layer,
// "result_norm" [n_embd, n_outputs]. nullptr when unknown.
const std::vector<float> * xglm_get_activation(const xglm_context * ctx, const std::string & name);

// KV cache, per sequence; positions [p0, p1), p1 < 0 meaning "to the end". seq_cp makes
// src's cells in the range visible to dst too (shared, not copied), replacing dst's own.
void    xglm_kv_clear(xglm_context * ctx);
void    xglm_kv_seq_rm(xglm_context * ctx, int32_t seq, int32_t p0, int32_t p1);
void    xglm_kv_seq_cp(xglm_context * ctx, int32_t seq_src, int32_t seq_dst, int32_t p0, int32_t p1);
int32_t xglm_kv_seq_pos_max(const xglm_context * ctx, int32_t seq);  // -1 when empty
int32_t xglm_kv_used_cells(const xglm_context * ctx);

// Wall time spent inside ggml's graph computation since the context was made (for measuring
// what the layers around it cost).
uint64_t xglm_compute_ns(const xglm_context * ctx);

// ---------------------------------------------------------------------------------------
// sampling (sampler.cpp)
//
// Sampling and scoring over one logits row, so that no n_vocab-wide row crosses to JS per
// token. Deterministic: the same row, parameters and seed give the same token on every
// platform (std::mt19937_64 is fully specified; the uniform draw is built by hand).

struct xglm_sampler_params {
    float   temperature = 1.0f;  // 0 = greedy (argmax; ties → lowest id)
    int32_t top_k       = 0;     // 0 = off
    float   top_p       = 1.0f;  // 1 = off
    float   min_p       = 0.0f;  // 0 = off; relative to the most likely token
    float   typical_p   = 1.0f;  // 1 = off
    // Penalties over the tokens in penalty_tokens (the caller picks the window):
    // a logit l of a token seen c > 0 times becomes (l > 0 ? l / repeat : l * repeat)
    // - c * frequency - presence.
    float                                 repeat_penalty    = 1.0f;
    float                                 presence_penalty  = 0.0f;
    float                                 frequency_penalty = 0.0f;
    std::vector<int32_t>                  penalty_tokens;
    std::vector<std::pair<int32_t, float>> logit_bias;  // added to the logit; -inf bans
};

// The seed of draw `step` of a generation seeded with `seed`: a 64-bit mix of both, so draws
// do not depend on each other (53 bits: it round-trips through a JS number).
uint64_t xglm_step_seed(uint64_t seed, uint64_t step);

// Picks a token from `logits` [n_vocab]. Returns -1 if every token is banned.
int32_t xglm_sample(const float * logits, int32_t n_vocab, const xglm_sampler_params & params, std::mt19937_64 & rng);

// log(softmax(logits))[id]: max-shifted, the normalizer summed in double.
double xglm_log_softmax_at(const float * logits, int32_t n_vocab, int32_t id);

// log of the softmax normalizer: log(sum(exp(logits))).
double xglm_log_sum_exp(const float * logits, int32_t n_vocab);

// The k largest entries of a row, descending (ties → lowest id), as ids and log-probabilities.
void xglm_top_k(const float * logits, int32_t n_vocab, int32_t k, std::vector<int32_t> * ids, std::vector<float> * logprobs);

// ---------------------------------------------------------------------------------------
// generation step

// One generation in one sequence: the token loop's policy (penalty window, per-step seeds,
// stop conditions) over a context, one token at a time. The caller drives it —
//     int32_t id = gen.sample();           // draw the next token from the current logits
//     (stream id)
//     if (gen.finished(id)) stop;
//     gen.evaluate(id, &err);              // decode it; its logits are the next draw's
// — and decides what happens between the two steps (streaming, waiting, aborting).
struct xglm_generation_params {
    xglm_sampler_params sampler;         // penalty_tokens: the tokens before the first draw, newest last
    int32_t             position       = 0;   // where the first generated token goes
    int32_t             seq            = 0;
    uint64_t            seed           = 0;   // draw i uses xglm_step_seed(seed, first_step + i)
    uint64_t            first_step     = 0;
    int64_t             max_steps      = 0;   // draws at most
    int32_t             position_limit = 0;   // no evaluation at or beyond this position
    int32_t             eos_token      = -1;  // -1: none
    size_t              penalty_window = 0;   // 0: no penalty tokens
};

class xglm_generator {
  public:
    // rng is reseeded for every draw; the context must outlive the generator.
    xglm_generator(xglm_context * ctx, xglm_generation_params params, std::mt19937_64 & rng);

    // Starts from the logits of batch token `batch_index` of the last xglm_decode; false and
    // *error when it has none.
    bool start(int32_t batch_index, std::string * error);

    // Draws the next token (-1 if every token is banned) from the current logits.
    int32_t sample();

    // Whether the generation ends with the token just drawn: -1, EOS, max_steps draws or the
    // position limit reached.
    bool finished(int32_t id) const;

    // Evaluates the drawn token at the next position; its logits are the next draw's.
    xglm_status evaluate(int32_t id, std::string * error);

    // For a caller that evaluates the drawn token itself (xglm_scheduler, in a batch with
    // other sequences): records that `id` was evaluated at position(), then takes `logits`
    // (its row of that evaluation) as the next draw's.
    void accepted(int32_t id, const float * logits);
    // Takes `logits` (the row of the prompt's last token) as the first draw's.
    void use_logits(const float * logits) { logits_ = logits; }

    int64_t steps() const { return steps_; }     // draws so far
    int32_t position() const { return pos_; }    // where the next evaluated token goes

  private:
    xglm_context *         ctx_;
    xglm_generation_params p_;
    std::mt19937_64 &      rng_;
    std::vector<int32_t>   history_;  // the recent tokens, newest last
    xglm_batch             batch_;
    const float *          logits_ = nullptr;
    int32_t                n_vocab_;
    int32_t                pos_;
    int64_t                steps_ = 0;
};

// ---------------------------------------------------------------------------------------
// scheduler: many generations over one context, one graph evaluation per step
//
// Continuous batching. Every step() builds ONE batch: the drawn token of every decoding
// stream the caller lets run (each at its own position in its own sequence) plus, within a
// token budget, the next chunk of a stream's prompt; evaluates it once (one ubatch: all or
// nothing), then draws each stream's next token from its own row with its own sampler and
// per-step seeds — the tokens a stream draws do not depend on the streams beside it. Streams
// join (add) and leave (remove, or finishing) between steps.
//
// KV cells: a stream holds (reserves) cells for its prompt and `reserve` generated tokens
// when it is admitted; add() refuses (XGLM_ERR_KV_FULL) a stream whose reservation does not
// fit beside the cells in use and the other streams' reservations, so a stream that joins
// never makes another run out of cells (a stream alone on the context is admitted when its
// prompt fits, holding the cells there are, unless it is strict). Tokens beyond a stream's reservation take free
// unreserved cells; when there is none, that stream alone ends with XGLM_ERR_KV_FULL.

struct xglm_stream_params {
    xglm_generation_params gen;      // gen.position: where the first generated token goes
    std::vector<int32_t>   prompt;   // evaluated first, at gen.position - prompt.size() …; at least 1 token
    int32_t                reserve = 0;  // KV cells held for generated tokens
    bool                   strict  = false;  // the reservation must fit also when the stream is alone
};

// What one step did to one stream.
struct xglm_step_event {
    int64_t     id       = -1;
    int32_t     token    = -1;     // the token drawn (-1: every token banned); unset when status != OK
    bool        drawn    = false;  // a token was drawn this step (false: prompt chunk only, or failure)
    bool        finished = false;  // the stream ended and was removed
    xglm_status status   = XGLM_OK;
    std::string error;
    int32_t     prompt_done = 0;   // prompt tokens evaluated so far
    int64_t     steps    = 0;      // draws so far
    int32_t     position = 0;      // one past the last position evaluated
};

class xglm_scheduler {
  public:
    // prefill_chunk: prompt tokens per step while other streams decode (all of n_ubatch when
    // none does).
    explicit xglm_scheduler(xglm_context * ctx, int32_t prefill_chunk = 64);
    ~xglm_scheduler();
    xglm_scheduler(const xglm_scheduler &)             = delete;
    xglm_scheduler & operator=(const xglm_scheduler &) = delete;

    // Admits a stream; its id (>= 0), or -1 with *status (XGLM_ERR_KV_FULL: the reservation
    // does not fit now; XGLM_ERR_INPUT) and *error.
    int64_t add(xglm_stream_params params, xglm_status * status, std::string * error);

    // Removes a stream between steps (its evaluated tokens stay in the cache).
    void remove(int64_t id);

    size_t size() const { return streams_.size(); }
    bool   has(int64_t id) const;
    // steps and one past the last evaluated position of a stream (false when unknown)
    bool   progress(int64_t id, int64_t * steps, int32_t * position) const;
    // KV cells free after every reservation
    int64_t free_cells() const;

    // One step over the streams for which ready(id) is true (a stream in its prompt is always
    // ready). Returns false with *status XGLM_OK when no stream could run (nothing changed);
    // false with another status when the evaluation failed (nothing changed either: the step
    // can be retried, e.g. after XGLM_ABORTED). Events: one per stream that took part.
    bool step(const std::function<bool(int64_t)> & ready, std::vector<xglm_step_event> * events, xglm_status * status,
              std::string * error);

  private:
    struct stream;
    xglm_context *                       ctx_;
    int32_t                              prefill_chunk_;
    int64_t                              next_id_ = 0;
    size_t                               rotate_  = 0;  // fairness when more streams than rows
    std::vector<std::unique_ptr<stream>> streams_;      // admission order
    xglm_batch                           batch_;
};

// ---------------------------------------------------------------------------------------
// quantization (the converter's)

// Quantizes n_rows rows of n_per_row floats to `type` (whole blocks; no importance matrix) into
// dst (n_rows · ggml_row_size(type, n_per_row) bytes) on up to n_threads threads; returns the
// bytes written.
size_t xglm_quantize_rows(ggml_type type, const float * src, uint8_t * dst, int64_t n_rows, int64_t n_per_row,
                          int n_threads);

// ggml's own to_float of `type` (F32: a copy) for n_rows rows into dst [n_rows · n_per_row]:
// the "dequantized twin" of a file, whose only difference from the original is the kernels'
// arithmetic. The type must have a to_float.
void xglm_dequantize_rows(ggml_type type, const uint8_t * src, int64_t n_rows, int64_t n_per_row, float * dst);

// Physical cores of this machine (falls back to the logical count).
int xglm_physical_cores();

// Bytes of physical memory; a model or a context that would need more is refused before
// allocating (on an overcommitting kernel the allocation would succeed, then kill the process).
size_t xglm_physical_memory();
