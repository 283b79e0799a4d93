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
    ++pos_;
    logits_ = xglm_get_logits(ctx_, 0);
    history_.push_back(id);
    // trimmed now and then, not per token
    const size_t window = p_.penalty_window;
    if (history_.size() > 2 * window + 64) history_.erase(history_.begin(), history_.end() - static_cast<std::ptrdiff_t>(window));
    return XGLM_OK;
}
