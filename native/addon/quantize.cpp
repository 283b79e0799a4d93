// Row quantization for the converter: the arguments of the engine's xglm_quantize_rows and
// xglm_dequantize_rows (ggml's own quantize and to_float functions), checked and marshalled.
//
// JS sees:
//   ggmlTypeInfo(type) -> { name, blockSize, typeSize, quantized }
//   rowSize(type, nPerRow) -> bytes of one row
//   quantizeRows(type, src: Float32Array, dst: Uint8Array, nRows, nPerRow, nThreads) -> Promise<bytes>
//   dequantizeRows(type, src: Uint8Array, nRows, nPerRow) -> Float32Array
//       ggml's own to_float for the type (synchronous; for tests and tools: the "dequantized
//       twin" of a file, whose only difference from the original is the kernels' arithmetic)
// src and dst are JS-owned; the worker holds references to them until it settles.
#include <algorithm>
#include <string>

#include "addon.h"
#include "xglm.h"

namespace {

bool valid_type(int64_t t) {
    if (t < 0 || t >= GGML_TYPE_COUNT) {
        return false;
    }
    const auto * traits = ggml_get_type_traits(static_cast<ggml_type>(t));
    return traits != nullptr && traits->blck_size > 0 && traits->type_size > 0;
}

ggml_type type_arg(const Napi::CallbackInfo & info, size_t i) {
    if (!info[i].IsNumber() || !valid_type(info[i].As<Napi::Number>().Int64Value())) {
        throw Napi::TypeError::New(info.Env(), "xglm: unknown ggml type id");
    }
    return static_cast<ggml_type>(info[i].As<Napi::Number>().Int32Value());
}

int64_t count_arg(const Napi::CallbackInfo & info, size_t i, const char * what) {
    if (!info[i].IsNumber()) {
        throw Napi::TypeError::New(info.Env(), std::string("xglm: ") + what + " must be a number");
    }
    const double v = info[i].As<Napi::Number>().DoubleValue();
    if (!(v >= 0 && v <= 9007199254740991.0) || v != static_cast<double>(static_cast<int64_t>(v))) {
        throw Napi::RangeError::New(info.Env(), std::string("xglm: ") + what + " must be a non-negative integer");
    }
    return static_cast<int64_t>(v);
}

Napi::Value type_info(const Napi::CallbackInfo & info) {
    const ggml_type type = type_arg(info, 0);
    Napi::Object out     = Napi::Object::New(info.Env());
    out.Set("name", ggml_type_name(type));
    out.Set("blockSize", static_cast<double>(ggml_blck_size(type)));
    out.Set("typeSize", static_cast<double>(ggml_type_size(type)));
    out.Set("quantized", ggml_is_quantized(type));
    return out;
}

Napi::Value row_size(const Napi::CallbackInfo & info) {
    const ggml_type type     = type_arg(info, 0);
    const int64_t   n_per_row = count_arg(info, 1, "nPerRow");
    if (n_per_row % ggml_blck_size(type) != 0) {
        throw Napi::RangeError::New(info.Env(), "xglm: row length is not a multiple of the type's block size");
    }
    return Napi::Number::New(info.Env(), static_cast<double>(ggml_row_size(type, n_per_row)));
}

class QuantizeWorker : public Napi::AsyncWorker {
  public:
    QuantizeWorker(Napi::Env env, ggml_type type, Napi::Float32Array src, Napi::Uint8Array dst, int64_t n_rows,
                   int64_t n_per_row, int n_threads) :
        Napi::AsyncWorker(env, "xglm.quantizeRows"),
        deferred_(Napi::Promise::Deferred::New(env)),
        type_(type),
        src_(src.Data()),
        dst_(dst.Data()),
        n_rows_(n_rows),
        n_per_row_(n_per_row),
        n_threads_(n_threads) {
        src_ref_ = Napi::Persistent(src.As<Napi::Object>());
        dst_ref_ = Napi::Persistent(dst.As<Napi::Object>());
    }

    Napi::Promise promise() const { return deferred_.Promise(); }

  protected:
    void Execute() override { bytes_ = xglm_quantize_rows(type_, src_, dst_, n_rows_, n_per_row_, n_threads_); }

    void OnOK() override { deferred_.Resolve(Napi::Number::New(Env(), static_cast<double>(bytes_))); }

    void OnError(const Napi::Error & e) override { deferred_.Reject(e.Value()); }

  private:
    Napi::Promise::Deferred deferred_;
    Napi::ObjectReference   src_ref_;
    Napi::ObjectReference   dst_ref_;
    ggml_type               type_;
    const float *           src_;
    uint8_t *               dst_;
    int64_t                 n_rows_;
    int64_t                 n_per_row_;
    int                     n_threads_;
    size_t                  bytes_ = 0;
};

// Rows are whole blocks of the type.
void check_row_length(Napi::Env env, ggml_type type, int64_t n_per_row) {
    if (n_per_row == 0 || n_per_row % ggml_blck_size(type) != 0) {
        throw Napi::RangeError::New(env, std::string("xglm: row length ") + std::to_string(n_per_row) +
                                             " is not a positive multiple of " + ggml_type_name(type) +
                                             "'s block size " + std::to_string(ggml_blck_size(type)));
    }
}

Napi::Value quantize_rows(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    const ggml_type type = type_arg(info, 0);
    if (!info[1].IsTypedArray() || info[1].As<Napi::TypedArray>().TypedArrayType() != napi_float32_array) {
        throw Napi::TypeError::New(env, "xglm: src must be a Float32Array");
    }
    if (!info[2].IsTypedArray() || info[2].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
        throw Napi::TypeError::New(env, "xglm: dst must be a Uint8Array");
    }
    auto src = info[1].As<Napi::Float32Array>();
    auto dst = info[2].As<Napi::Uint8Array>();
    const int64_t n_rows    = count_arg(info, 3, "nRows");
    const int64_t n_per_row = count_arg(info, 4, "nPerRow");
    const int64_t n_threads = count_arg(info, 5, "nThreads");
    check_row_length(env, type, n_per_row);
    if (ggml_quantize_requires_imatrix(type)) {
        throw Napi::RangeError::New(env, std::string("xglm: ") + ggml_type_name(type) + " needs an importance matrix");
    }
    if (static_cast<int64_t>(src.ElementLength()) != n_rows * n_per_row) {
        throw Napi::RangeError::New(env, "xglm: src length is not nRows * nPerRow");
    }
    if (static_cast<int64_t>(dst.ByteLength()) < n_rows * static_cast<int64_t>(ggml_row_size(type, n_per_row))) {
        throw Napi::RangeError::New(env, "xglm: dst is smaller than nRows * rowSize(type, nPerRow)");
    }
    auto * worker = new QuantizeWorker(env, type, src, dst, n_rows, n_per_row,
                                       static_cast<int>(std::clamp<int64_t>(n_threads, 1, 256)));
    Napi::Promise promise = worker->promise();
    worker->Queue();
    return promise;
}

Napi::Value dequantize_rows(const Napi::CallbackInfo & info) {
    Napi::Env       env  = info.Env();
    const ggml_type type = type_arg(info, 0);
    if (!info[1].IsTypedArray() || info[1].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
        throw Napi::TypeError::New(env, "xglm: src must be a Uint8Array");
    }
    auto          src       = info[1].As<Napi::Uint8Array>();
    const int64_t n_rows    = count_arg(info, 2, "nRows");
    const int64_t n_per_row = count_arg(info, 3, "nPerRow");
    check_row_length(env, type, n_per_row);
    const auto * traits = ggml_get_type_traits(type);
    if (type != GGML_TYPE_F32 && traits->to_float == nullptr) {
        throw Napi::TypeError::New(env, std::string("xglm: ggml cannot convert ") + ggml_type_name(type) + " to float");
    }
    const size_t row_bytes = ggml_row_size(type, n_per_row);
    // ≤ 2^53 elements by count_arg; the product must also fit what one typed array can hold
    if (n_rows > 0 && (n_per_row > (int64_t{1} << 40) / n_rows)) {
        throw Napi::RangeError::New(env, "xglm: nRows * nPerRow is too large");
    }
    if (static_cast<double>(src.ByteLength()) != static_cast<double>(n_rows) * static_cast<double>(row_bytes)) {
        throw Napi::RangeError::New(env, "xglm: src length is not nRows * rowSize(type, nPerRow)");
    }
    Napi::Float32Array out = Napi::Float32Array::New(env, static_cast<size_t>(n_rows * n_per_row));
    xglm_dequantize_rows(type, src.Data(), n_rows, n_per_row, out.Data());
    return out;
}

}  // namespace

void init_quantize(Napi::Env env, Napi::Object exports) {
    exports.Set("ggmlTypeInfo", Napi::Function::New(env, type_info, "ggmlTypeInfo"));
    exports.Set("rowSize", Napi::Function::New(env, row_size, "rowSize"));
    exports.Set("quantizeRows", Napi::Function::New(env, quantize_rows, "quantizeRows"));
    exports.Set("dequantizeRows", Napi::Function::New(env, dequantize_rows, "dequantizeRows"));
}
