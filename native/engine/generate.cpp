// The generation step (xglm.h, xglm_generator): the token loop's policy, moved as it was from
// the addon's generate() so that the addon only drives it.
#include <algorithm>

#include "xglm-impl.h"

xglm_generator::xglm_generator(xglm_context * ctx, xglm_generation_params params, std::mt19937_64 & rng) :
    ctx_(ctx),
    p_(std::move(params)),
    rng_(rng),
    n_vocab_(xglm_model_hparams(xglm_context_model(ctx)).n_vocab),
    pos_(p_.position) {
    history_ = std::move(p_.sampler.penalty_tokens);
    p_.sampler.penalty_tokens.clear();
    batch_.tokens      = {0};
    batch_.pos         = {0};
    batch_.seq         = {p_.seq};
    batch_.want_logits = {1};
}

bool xglm_generator::start(int32_t batch_index, std::string * error) {
    logits_ = xglm_get_logits(ctx_, batch_index);
    if (!logits_) {
        return xglm_fail(error, "batch token " + std::to_string(batch_index) + " has no logits; evaluate it with wantLogits set");
    }
    return true;
}

int32_t xglm_generator::sample() {
    if (p_.penalty_window > 0) {
        const size_t n = std::min(p_.penalty_window, history_.size());
        p_.sampler.penalty_tokens.assign(history_.end() - static_cast<std::ptrdiff_t>(n), history_.end());
    }
    rng_.seed(xglm_step_seed(p_.seed, p_.first_step + static_cast<uint64_t>(steps_)));
    const int32_t id = xglm_sample(logits_, n_vocab_, p_.sampler, rng_);
    ++steps_;
    return id;
}

bool xglm_generator::finished(int32_t id) const {
    return id < 0 || id == p_.eos_token || steps_ >= p_.max_steps || pos_ >= p_.position_limit;
}

xglm_status xglm_generator::evaluate(int32_t id, std::string * error) {
    batch_.tokens[0]     = id;
    batch_.pos[0]        = pos_;
    const xglm_status st = xglm_decode(ctx_, batch_, error);
    if (st != XGLM_OK) return st;
    accepted(id, xglm_get_logits(ctx_, 0));
    return XGLM_OK;
}

void xglm_generator::accepted(int32_t id, const float * logits) {
    ++pos_;
    logits_ = logits;
    history_.push_back(id);
    // trimmed now and then, not per token
    const size_t window = p_.penalty_window;
    if (history_.size() > 2 * window + 64) history_.erase(history_.begin(), history_.end() - static_cast<std::ptrdiff_t>(window));
}

// ---------------------------------------------------------------------------------------
// xglm_scheduler

struct xglm_scheduler::stream {
    int64_t                         id;
    int32_t                         seq;
    std::mt19937_64                 rng;  // reseeded per draw by the generator
    std::unique_ptr<xglm_generator> gen;
    std::vector<int32_t>            prompt;
    int32_t                         prompt_pos0;
    size_t                          prompt_done = 0;
    int32_t                         pending     = -1;  // drawn, to be evaluated next
    int64_t                         reserved    = 0;   // cells still held

    bool prefilling() const { return prompt_done < prompt.size(); }
};

xglm_scheduler::xglm_scheduler(xglm_context * ctx, int32_t prefill_chunk) :
    ctx_(ctx), prefill_chunk_(std::max<int32_t>(1, prefill_chunk)) {}

xglm_scheduler::~xglm_scheduler() = default;

int64_t xglm_scheduler::free_cells() const {
    int64_t held = 0;
    for (const auto & s : streams_) held += s->reserved;
    return static_cast<int64_t>(xglm_n_ctx(ctx_)) - xglm_kv_used_cells(ctx_) - held;
}

int64_t xglm_scheduler::add(xglm_stream_params params, xglm_status * status, std::string * error) {
    auto fail = [&](xglm_status st, const std::string & msg) -> int64_t {
        if (status) *status = st;
        xglm_fail(error, msg);
        return -1;
    };
    const int32_t n_prompt = static_cast<int32_t>(params.prompt.size());
    if (n_prompt == 0) return fail(XGLM_ERR_INPUT, "a stream needs at least one prompt token");
    if (params.reserve < 0) return fail(XGLM_ERR_INPUT, "reserve must be >= 0");
    const int32_t seq = params.gen.seq;
    if (seq < 0 || seq >= XGLM_MAX_SEQ) return fail(XGLM_ERR_INPUT, "sequence id " + std::to_string(seq) + " is outside [0, " + std::to_string(XGLM_MAX_SEQ) + ")");
    for (const auto & s : streams_) {
        if (s->seq == seq) return fail(XGLM_ERR_INPUT, "sequence " + std::to_string(seq) + " already has a running generation");
    }
    const int32_t pos0 = params.gen.position - n_prompt;
    if (pos0 < 0) return fail(XGLM_ERR_INPUT, "the prompt does not fit before position " + std::to_string(params.gen.position));
    int64_t       need = static_cast<int64_t>(n_prompt) + params.reserve;
    const int64_t free = free_cells();
    // alone on the context a stream takes the cells there are (it ends when they run out)
    if (need > free && streams_.empty() && !params.strict && n_prompt <= free) need = free;
    if (need > free) {
        return fail(XGLM_ERR_KV_FULL, "the KV cache cannot hold this generation: it needs " + std::to_string(need) +
                                          " cells and " + std::to_string(std::max<int64_t>(0, free)) +
                                          " are free beside the running ones; remove sequences, wait, or create the context with a larger contextSize");
    }
    auto s         = std::make_unique<stream>();
    s->id          = next_id_++;
    s->seq         = seq;
    s->prompt      = std::move(params.prompt);
    s->prompt_pos0 = pos0;
    s->reserved    = need;
    s->gen         = std::make_unique<xglm_generator>(ctx_, std::move(params.gen), s->rng);
    const int64_t id = s->id;
    streams_.push_back(std::move(s));
    if (status) *status = XGLM_OK;
    return id;
}

void xglm_scheduler::remove(int64_t id) {
    streams_.erase(std::remove_if(streams_.begin(), streams_.end(), [id](const std::unique_ptr<stream> & s) { return s->id == id; }),
                   streams_.end());
}

bool xglm_scheduler::has(int64_t id) const {
    return std::any_of(streams_.begin(), streams_.end(), [id](const std::unique_ptr<stream> & s) { return s->id == id; });
}

bool xglm_scheduler::progress(int64_t id, int64_t * steps, int32_t * position) const {
    for (const auto & s : streams_) {
        if (s->id != id) continue;
        *steps    = s->gen->steps();
        *position = s->prefilling() ? s->prompt_pos0 + static_cast<int32_t>(s->prompt_done) : s->gen->position();
        return true;
    }
    return false;
}

bool xglm_scheduler::step(const std::function<bool(int64_t)> & ready, std::vector<xglm_step_event> * events,
                          xglm_status * status, std::string * error) {
    events->clear();
    *status = XGLM_OK;
    const xglm_context_params & cp = ctx_->params;
    const int32_t max_tokens = static_cast<int32_t>(cp.n_ubatch);
    const int32_t max_rows   = static_cast<int32_t>(cp.n_outputs);

    // what each stream puts into this step's batch
    struct part {
        stream * s;
        int32_t  first;     // batch index of its first token
        int32_t  n;         // tokens
        int64_t  from_pool; // cells beyond its reservation
    };
    std::vector<part> parts;
    batch_.tokens.clear();
    batch_.pos.clear();
    batch_.seq.clear();
    batch_.want_logits.clear();
    int64_t pool = free_cells();  // unreserved free cells
    int32_t rows = 0;
    auto push = [&](int32_t token, int32_t pos, int32_t seq, bool logits) {
        batch_.tokens.push_back(token);
        batch_.pos.push_back(pos);
        batch_.seq.push_back(seq);
        batch_.want_logits.push_back(logits ? 1 : 0);
    };

    // one token of every decoding stream that may run, in turn when there are more than rows
    const size_t n_streams = streams_.size();
    std::vector<stream *> out_of_cells;
    for (size_t k = 0; k < n_streams && rows < max_rows && static_cast<int32_t>(batch_.tokens.size()) < max_tokens; ++k) {
        stream * s = streams_[(rotate_ + k) % n_streams].get();
        if (s->prefilling() || !ready(s->id)) continue;
        int64_t from_pool = 0;
        if (s->reserved == 0) {
            if (pool <= 0) {
                out_of_cells.push_back(s);
                continue;
            }
            from_pool = 1;
            --pool;
        }
        parts.push_back({s, static_cast<int32_t>(batch_.tokens.size()), 1, from_pool});
        push(s->pending, s->gen->position(), s->seq, true);
        ++rows;
    }
    if (n_streams) rotate_ = (rotate_ + 1) % n_streams;
    const bool decoding = !parts.empty();

    // a chunk of prompts, oldest first
    int32_t budget = std::min<int32_t>(decoding ? prefill_chunk_ : max_tokens, max_tokens - static_cast<int32_t>(batch_.tokens.size()));
    for (auto & up : streams_) {
        stream * s = up.get();
        if (budget <= 0 || rows >= max_rows) break;
        if (!s->prefilling()) continue;
        const int32_t left = static_cast<int32_t>(s->prompt.size() - s->prompt_done);
        const int32_t n    = std::min(left, budget);
        const int64_t from_pool = std::max<int64_t>(0, n - s->reserved);
        if (from_pool > pool) continue;  // reserved at admission; only shared cells can make this short
        pool -= from_pool;
        parts.push_back({s, static_cast<int32_t>(batch_.tokens.size()), n, from_pool});
        for (int32_t j = 0; j < n; ++j) {
            const size_t i = s->prompt_done + j;
            const bool last = j == n - 1 && n == left;
            push(s->prompt[i], s->prompt_pos0 + static_cast<int32_t>(i), s->seq, last);
            if (last) ++rows;
        }
        budget -= n;
    }

    // streams that found no cell end alone
    for (stream * s : out_of_cells) {
        xglm_step_event e;
        e.id       = s->id;
        e.finished = true;
        e.status   = XGLM_ERR_KV_FULL;
        e.error    = "the KV cache is full (" + std::to_string(xglm_n_ctx(ctx_)) +
                  " cells); remove sequences or positions, or create the context with a larger contextSize";
        e.steps    = s->gen->steps();
        e.position = s->gen->position();
        e.prompt_done = static_cast<int32_t>(s->prompt.size());
        events->push_back(std::move(e));
        remove(s->id);
    }
    if (parts.empty()) return !events->empty();

    *status = xglm_decode(ctx_, batch_, error);
    if (*status != XGLM_OK) return false;

    for (const part & pt : parts) {
        stream *        s = pt.s;
        xglm_step_event e;
        e.id = s->id;
        s->reserved = std::max<int64_t>(0, s->reserved - (pt.n - pt.from_pool));
        const float * logits = xglm_get_logits(ctx_, pt.first + pt.n - 1);
        if (s->prefilling()) {
            s->prompt_done += static_cast<size_t>(pt.n);
            if (!s->prefilling()) s->gen->use_logits(logits);
        } else {
            s->gen->accepted(s->pending, logits);
        }
        e.prompt_done = static_cast<int32_t>(s->prompt_done);
        if (!s->prefilling()) {
            e.token    = s->gen->sample();
            e.drawn    = true;
            e.finished = s->gen->finished(e.token);
            s->pending = e.token;
        }
        e.steps    = s->gen->steps();
        e.position = s->prefilling() ? s->prompt_pos0 + static_cast<int32_t>(s->prompt_done) : s->gen->position();
        const bool finished = e.finished;
        events->push_back(std::move(e));
        if (finished) remove(s->id);
    }
    return true;
}
