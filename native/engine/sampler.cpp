// Sampling over a logits row: bias → penalties → top-k → typical-p → top-p → min-p →
// temperature → draw (the order llama.cpp's default chain uses).
#include "xglm.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <unordered_map>

namespace {

struct candidate {
    float   logit;
    int32_t id;
};

// Most likely first; equal logits by lower id, so every order is deterministic.
bool more_likely(const candidate & a, const candidate & b) {
    return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
}

// Probabilities of the candidates (softmax of their logits), in their current order.
std::vector<double> softmax(const std::vector<candidate> & c) {
    float max = -std::numeric_limits<float>::infinity();
    for (const auto & x : c) max = std::max(max, x.logit);
    std::vector<double> p(c.size());
    double              sum = 0.0;
    for (size_t i = 0; i < c.size(); ++i) sum += p[i] = std::exp(static_cast<double>(c[i].logit) - max);
    for (auto & x : p) x /= sum;
    return p;
}

// Keeps the smallest most-likely prefix whose probability reaches top_p (at least min_keep).
// Sorts only as much of the row as it needs: a 256k-wide full sort per token is slow.
void filter_top_p(std::vector<candidate> & c, float top_p) {
    const std::vector<double> p = softmax(c);  // normalizer over all candidates
    std::vector<std::pair<double, size_t>> order(c.size());
    for (size_t i = 0; i < c.size(); ++i) order[i] = {p[i], i};
    auto cmp = [&](const std::pair<double, size_t> & a, const std::pair<double, size_t> & b) {
        return more_likely(c[a.second], c[b.second]);
    };
    size_t k = std::min<size_t>(256, order.size());
    for (;;) {
        std::partial_sort(order.begin(), order.begin() + k, order.end(), cmp);
        double cum = 0.0;
        for (size_t i = 0; i < k; ++i) {
            cum += order[i].first;
            if (cum >= top_p) {
                std::vector<candidate> kept;
                for (size_t j = 0; j <= i; ++j) kept.push_back(c[order[j].second]);
                c.swap(kept);
                return;
            }
        }
        if (k == order.size()) return;
        k = std::min(order.size(), k * 8);
    }
}

// Locally typical sampling (Meister et al.): keep the tokens whose surprisal is closest to
// the entropy until their probability reaches typical_p.
void filter_typical(std::vector<candidate> & c, float typical_p) {
    const std::vector<double> p = softmax(c);
    double                    entropy = 0.0;
    for (double x : p) {
        if (x > 0) entropy -= x * std::log(x);
    }
    std::vector<std::pair<double, size_t>> order(c.size());
    for (size_t i = 0; i < c.size(); ++i) order[i] = {std::fabs(-std::log(p[i]) - entropy), i};
    std::sort(order.begin(), order.end(), [&](const auto & a, const auto & b) {
        return a.first < b.first || (a.first == b.first && c[a.second].id < c[b.second].id);
    });
    std::vector<candidate> kept;
    double                 cum = 0.0;
    for (const auto & o : order) {
        kept.push_back(c[o.second]);
        cum += p[o.second];
        if (cum >= typical_p) break;
    }
    c.swap(kept);
}

// A uniform double in [0, 1) from the top 53 bits: the same value on every platform
// (std::uniform_real_distribution is implementation-defined).
double uniform01(std::mt19937_64 & rng) { return static_cast<double>(rng() >> 11) * 0x1.0p-53; }

}  // namespace

namespace {

bool usable(float logit) { return !std::isnan(logit) && logit != -std::numeric_limits<float>::infinity(); }

// Row passes are written as LANES independent accumulators so that compilers vectorize them
// (x86 maxps is exactly `a > b ? a : b`); a 256k-entry row per token or per scored position
// makes these loops the cost of sampling and scoring.
constexpr int32_t LANES = 8;
constexpr float   NEG_INF = -std::numeric_limits<float>::infinity();

// The largest entry; NaN entries are skipped; -inf when there is nothing else.
float row_max(const float * row, int32_t n) {
    float   acc[LANES];
    int32_t i = 0;
    for (float & a : acc) a = NEG_INF;
    for (; i + LANES <= n; i += LANES) {
        for (int32_t l = 0; l < LANES; ++l) acc[l] = row[i + l] > acc[l] ? row[i + l] : acc[l];
    }
    float m = NEG_INF;
    for (float a : acc) m = a > m ? a : m;
    for (; i < n; ++i) m = row[i] > m ? row[i] : m;
    return m;
}

// exp(x) for x <= 0 within a few float ulps, branch-free so that a loop over it vectorizes:
// x = n·ln2 + r with |r| <= ln2/2, exp(r) by its Taylor series to r^7 (truncation < 1e-8),
// 2^n built in the exponent bits. Below -87 (and -inf) it returns exp(-87) ≈ 1.6e-38 instead of
// 0, which no double sum of such terms can see. NaN stays NaN.
inline float exp_nonpositive(float x) {
    x             = x < -87.0f ? -87.0f : x;
    const float t = x * 1.44269504f + 12582912.0f;  // 1.5·2^23: the addition rounds x/ln2 to an integer
    const float n = t - 12582912.0f;
    const float r = (x - n * 0.693359375f) - n * -2.12194440e-4f;  // ln 2 = 0.693359375 - 2.12194440e-4
    float       p = 1.0f / 5040.0f;
    p             = p * r + 1.0f / 720.0f;
    p             = p * r + 1.0f / 120.0f;
    p             = p * r + 1.0f / 24.0f;
    p             = p * r + 1.0f / 6.0f;
    p             = p * r + 0.5f;
    p             = p * r + 1.0f;
    p             = p * r + 1.0f;
    const uint32_t bits = static_cast<uint32_t>(static_cast<int32_t>(n) + 127) << 23;
    float          scale;
    std::memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

// The k most likely usable entries of row, most likely first — or, when there are no more
// than k, all of them in id order (what a full candidate list truncated by nothing keeps).
// One pass with a min-heap of k: no 256k-entry candidate list per token.
std::vector<candidate> top_k_candidates(const float * row, int32_t n_vocab, int32_t k) {
    std::vector<candidate> heap;
    heap.reserve(k);
    // with more_likely as "less", the heap's front is its least likely entry
    int32_t i = 0;
    for (; i < n_vocab && static_cast<int32_t>(heap.size()) < k; ++i) {
        if (!usable(row[i])) continue;
        heap.push_back({row[i], i});
        std::push_heap(heap.begin(), heap.end(), more_likely);
    }
    // The heap is full: a later entry gets in only with a strictly larger logit than the
    // least likely kept one (on a tie the lower id, kept already, wins). One compare per
    // entry on the common path; NaN and -inf never pass it.
    // Blocks whose largest entry does not beat the threshold are skipped after one vectorized
    // pass: past the first few thousand entries that is nearly all of them.
    bool more_than_k = false;  // a usable entry was left out
    float threshold  = heap.empty() ? std::numeric_limits<float>::infinity() : heap.front().logit;
    constexpr int32_t BLOCK = 64;
    while (i < n_vocab) {
        const int32_t end = std::min(n_vocab, i + BLOCK);
        const float   bm  = row_max(row + i, end - i);
        if (bm != NEG_INF) more_than_k = true;  // a usable entry: it enters or is left out
        if (!(bm > threshold)) {
            i = end;
            continue;
        }
        for (; i < end; ++i) {
            const float v = row[i];
            if (v > threshold) {
                std::pop_heap(heap.begin(), heap.end(), more_likely);
                heap.back() = {v, i};
                std::push_heap(heap.begin(), heap.end(), more_likely);
                threshold = heap.front().logit;
            }
        }
    }
    if (!more_than_k) {
        std::sort(heap.begin(), heap.end(), [](const candidate & a, const candidate & b) { return a.id < b.id; });
    } else {
        std::sort(heap.begin(), heap.end(), more_likely);
    }
    return heap;
}

}  // namespace

uint64_t xglm_step_seed(uint64_t seed, uint64_t step) {
    uint64_t x = seed * 0x9e3779b97f4a7c15ull + step * 0xbf58476d1ce4e5b9ull;  // mod 2^64
    x ^= x >> 31;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 29;
    return x & ((uint64_t(1) << 53) - 1);
}

int32_t xglm_sample(const float * logits, int32_t n_vocab, const xglm_sampler_params & params, std::mt19937_64 & rng) {
    const bool penalize = !params.penalty_tokens.empty() &&
                          (params.repeat_penalty != 1.0f || params.presence_penalty != 0.0f || params.frequency_penalty != 0.0f);
    // The row is adjusted in a copy only when there is something to adjust.
    std::vector<float> work;
    const float *      row = logits;
    if (!params.logit_bias.empty() || penalize) {
        work.assign(logits, logits + n_vocab);
        row = work.data();
    }
    for (const auto & [id, bias] : params.logit_bias) {
        if (id >= 0 && id < n_vocab) work[id] += bias;
    }
    if (penalize) {
        std::unordered_map<int32_t, int> counts;
        for (int32_t id : params.penalty_tokens) {
            if (id >= 0 && id < n_vocab) ++counts[id];
        }
        for (const auto & [id, n] : counts) {
            float & l = work[id];
            l         = l > 0 ? l / params.repeat_penalty : l * params.repeat_penalty;
            l -= static_cast<float>(n) * params.frequency_penalty + params.presence_penalty;
        }
    }

    if (params.temperature <= 0.0f) {
        // argmax; the lowest id wins ties; NaN and -inf never win (-1 when nothing is usable)
        // by blocks: the first block holding the row's maximum, then the first entry in it
        constexpr int32_t BLOCK = 256;
        float   best = NEG_INF;
        int32_t from = 0;
        for (int32_t i = 0; i < n_vocab; i += BLOCK) {
            const float bm = row_max(row + i, std::min(BLOCK, n_vocab - i));
            if (bm > best) {
                best = bm;
                from = i;
            }
        }
        if (best == NEG_INF) return -1;
        for (int32_t i = from;; ++i) {
            if (row[i] == best) return i;
        }
    }

    std::vector<candidate> c;
    if (params.top_k > 0 && params.top_k < n_vocab) {
        c = top_k_candidates(row, n_vocab, params.top_k);
    } else {
        c.reserve(n_vocab);
        for (int32_t i = 0; i < n_vocab; ++i) {
            if (usable(row[i])) c.push_back({row[i], i});
        }
    }
    if (c.empty()) return -1;

    if (params.typical_p < 1.0f) filter_typical(c, params.typical_p);
    if (params.top_p < 1.0f) filter_top_p(c, params.top_p);
    if (params.min_p > 0.0f) {
        float max = -std::numeric_limits<float>::infinity();
        for (const auto & x : c) max = std::max(max, x.logit);
        const float threshold = max + std::log(params.min_p);
        c.erase(std::remove_if(c.begin(), c.end(), [&](const candidate & x) { return x.logit < threshold; }), c.end());
    }

    for (auto & x : c) x.logit /= params.temperature;
    const std::vector<double> p = softmax(c);
    const double              u = uniform01(rng);
    double                    cum = 0.0;
    for (size_t i = 0; i < c.size(); ++i) {
        cum += p[i];
        if (u < cum) return c[i].id;
    }
    return c.back().id;  // u within rounding of 1
}

double xglm_log_sum_exp(const float * logits, int32_t n_vocab) {
    const float max = row_max(logits, n_vocab);
    if (!std::isfinite(max)) {
        // no finite entry to shift by: the plain formula (inf or NaN, as it comes)
        double sum = 0.0;
        for (int32_t i = 0; i < n_vocab; ++i) sum += std::exp(static_cast<double>(logits[i]) - max);
        return max + std::log(sum);
    }
    double  acc[LANES] = {};
    int32_t i          = 0;
    for (; i + LANES <= n_vocab; i += LANES) {
        for (int32_t l = 0; l < LANES; ++l) acc[l] += exp_nonpositive(logits[i + l] - max);
    }
    double sum = 0.0;
    for (double a : acc) sum += a;
    for (; i < n_vocab; ++i) sum += std::exp(static_cast<double>(logits[i]) - max);
    return max + std::log(sum);
}

double xglm_log_softmax_at(const float * logits, int32_t n_vocab, int32_t id) {
    return static_cast<double>(logits[id]) - xglm_log_sum_exp(logits, n_vocab);
}

void xglm_top_k(const float * logits, int32_t n_vocab, int32_t k, std::vector<int32_t> * ids, std::vector<float> * logprobs) {
    k = std::max(0, std::min(k, n_vocab));
    // the k most likely usable entries; unusable ones (NaN, -inf) only fill a short row
    std::vector<candidate> c = top_k_candidates(logits, n_vocab, k);
    std::sort(c.begin(), c.end(), more_likely);
    for (int32_t i = 0; static_cast<int32_t>(c.size()) < k && i < n_vocab; ++i) {
        if (!usable(logits[i])) c.push_back({logits[i], i});
    }
    const double lse = xglm_log_sum_exp(logits, n_vocab);
    ids->resize(k);
    logprobs->resize(k);
    for (int32_t i = 0; i < k; ++i) {
        (*ids)[i]      = c[i].id;
        (*logprobs)[i] = static_cast<float>(static_cast<double>(c[i].logit) - lse);
    }
}
