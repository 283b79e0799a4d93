// Row quantization for the converter: ggml's own quantize and to_float functions (xglm.h). The
// addon's quantizeRows / dequantizeRows check their arguments and call these.
#include <algorithm>
#include <cstring>
#include <thread>
#include <vector>

#include "xglm.h"

size_t xglm_quantize_rows(ggml_type type, const float * src, uint8_t * dst, int64_t n_rows, int64_t n_per_row,
                          int n_threads_max) {
    const size_t        row_bytes  = ggml_row_size(type, n_per_row);
    const int64_t       n_threads  = std::max<int64_t>(1, std::min<int64_t>(n_threads_max, n_rows));
    const int64_t       per_thread = (n_rows + n_threads - 1) / n_threads;
    std::vector<size_t> written(n_threads, 0);
    std::vector<std::thread> threads;
    for (int64_t t = 0; t < n_threads; ++t) {
        const int64_t first = t * per_thread;
        const int64_t count = std::min(per_thread, n_rows - first);
        if (count <= 0) {
            break;
        }
        threads.emplace_back([=, &written] {
            written[t] = ggml_quantize_chunk(type, src + first * n_per_row, dst + first * row_bytes, 0, count, n_per_row, nullptr);
        });
    }
    for (auto & th : threads) {
        th.join();
    }
    size_t bytes = 0;
    for (size_t w : written) {
        bytes += w;
    }
    return bytes;
}

void xglm_dequantize_rows(ggml_type type, const uint8_t * src, int64_t n_rows, int64_t n_per_row, float * dst) {
    const auto * traits    = ggml_get_type_traits(type);
    const size_t row_bytes = ggml_row_size(type, n_per_row);
    for (int64_t r = 0; r < n_rows; ++r) {
        if (type == GGML_TYPE_F32) {
            std::memcpy(dst + r * n_per_row, src + r * row_bytes, row_bytes);
        } else {
            traits->to_float(src + r * row_bytes, dst + r * n_per_row, n_per_row);
        }
    }
}
