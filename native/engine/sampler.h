// Sampling and scoring over one logits row, so that no n_vocab-wide row crosses to JS per
// token. Deterministic: the same row, parameters and seed give the same token on every
// platform (std::mt19937_64 is fully specified; the uniform draw is built by hand).
#pragma once

#include <cstdint>
#include <random>
#include <utility>
#include <vector>

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
