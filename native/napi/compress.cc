// zstd off the JS thread (native/copy/zstd.h).
#include "copy/zstd.h"
#include "napi/binding.h"

#include <cstdlib>

namespace lowtide::napi {
namespace {

// Compresses or decompresses one view on the libuv thread pool. The result
// is malloc'ed memory handed to JS without a copy (freed by the Buffer).
class ZstdWorker : public Napi::AsyncWorker {
 public:
  ZstdWorker(Napi::Env env, Napi::TypedArray view, bool compress, int level, size_t max_size)
      : Napi::AsyncWorker(env, compress ? "lowtide:zstdCompress" : "lowtide:zstdDecompress"),
        deferred_(Napi::Promise::Deferred::New(env)), view_(view), compress_(compress), level_(level), max_size_(max_size) {}
  ~ZstdWorker() override { std::free(out_.data); }
  Napi::Promise promise() { return deferred_.Promise(); }

  void Execute() override {
    try {
      out_ = compress_ ? copy::zstd_compress(view_.data, view_.size, level_) : copy::zstd_decompress(view_.data, view_.size, max_size_);
    } catch (const std::exception& e) {
      SetError(e.what());
    }
  }
  void OnOK() override {
    unsigned char* p = std::exchange(out_.data, nullptr);
    deferred_.Resolve(Napi::Buffer<unsigned char>::New(Env(), p, out_.size, [](Napi::Env, unsigned char* q) { std::free(q); }));
  }
  void OnError(const Napi::Error& e) override {
    deferred_.Reject(to_js_error(Env(), io::IoError(compress_ ? "INTERNAL" : "INVALID_ARGUMENT", e.Message())).Value());
  }

 private:
  Napi::Promise::Deferred deferred_;
  HeldView view_;
  bool compress_;
  int level_;
  size_t max_size_;
  copy::ZstdOutput out_{};
};

Napi::TypedArray view_arg(const Napi::CallbackInfo& info, const char* fn) {
  if (info.Length() < 1 || !info[0].IsTypedArray()) throw_invalid(info.Env(), std::string(fn) + "(view, ...) expects a Uint8Array");
  return info[0].As<Napi::TypedArray>();
}

int level_arg(const Napi::CallbackInfo& info, size_t i, const char* fn) {
  if (info.Length() <= i || !info[i].IsNumber()) throw_invalid(info.Env(), std::string(fn) + ": expects a level");
  int level = info[i].As<Napi::Number>().Int32Value();
  if (level < 1 || level > 22) throw_invalid(info.Env(), std::string(fn) + ": level must be 1..22");
  return level;
}

// zstdCompress(view, level): Promise<Buffer>
Napi::Value ZstdCompress(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::TypedArray view = view_arg(info, "zstdCompress");
  int level = level_arg(info, 1, "zstdCompress");
  return queued(new ZstdWorker(env, view, true, level, 0));
}

// zstdDecompress(view, maxSize): Promise<Buffer>
Napi::Value ZstdDecompress(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::TypedArray view = view_arg(info, "zstdDecompress");
  if (info.Length() < 2 || !info[1].IsNumber()) throw_invalid(env, "zstdDecompress(view, maxSize) expects a maximum size");
  double max = info[1].As<Napi::Number>().DoubleValue();
  if (!(max >= 0) || max > 1e12) throw_invalid(env, "zstdDecompress: maxSize out of range");
  return queued(new ZstdWorker(env, view, false, 0, size_t(max)));
}

// Compresses (level > 0) or decompresses (level 0) into a caller's buffer;
// resolves with the size written.
class IntoWorker : public Napi::AsyncWorker {
 public:
  IntoWorker(Napi::Env env, Napi::TypedArray src, Napi::TypedArray dst, int level)
      : Napi::AsyncWorker(env, level > 0 ? "lowtide:zstdCompressInto" : "lowtide:zstdDecompressInto"),
        deferred_(Napi::Promise::Deferred::New(env)), src_(src), dst_(dst), level_(level) {}
  Napi::Promise promise() { return deferred_.Promise(); }
  void Execute() override {
    try {
      n_ = level_ > 0 ? copy::zstd_compress_into(src_.data, src_.size, dst_.data, dst_.size, level_) : copy::zstd_decompress_into(src_.data, src_.size, dst_.data, dst_.size);
    } catch (const std::exception& e) {
      SetError(e.what());
    }
  }
  void OnOK() override { deferred_.Resolve(Napi::Number::New(Env(), double(n_))); }
  void OnError(const Napi::Error& e) override {
    deferred_.Reject(to_js_error(Env(), io::IoError(level_ > 0 ? "INTERNAL" : "INVALID_ARGUMENT", e.Message())).Value());
  }

 private:
  Napi::Promise::Deferred deferred_;
  HeldView src_, dst_;
  int level_;
  size_t n_ = 0;
};

// zstdCompressInto(src, dst, level): Promise<number>
Napi::Value ZstdCompressInto(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::TypedArray src = view_arg(info, "zstdCompressInto");
  if (info.Length() < 2 || !info[1].IsTypedArray()) throw_invalid(env, "zstdCompressInto(src, dst, level) expects a Uint8Array dst");
  Napi::TypedArray dst = info[1].As<Napi::TypedArray>();
  int level = level_arg(info, 2, "zstdCompressInto");
  return queued(new IntoWorker(env, src, dst, level));
}

// zstdDecompressInto(src, dst): Promise<number>
Napi::Value ZstdDecompressInto(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::TypedArray src = view_arg(info, "zstdDecompressInto");
  if (info.Length() < 2 || !info[1].IsTypedArray()) throw_invalid(env, "zstdDecompressInto(src, dst) expects a Uint8Array dst");
  return queued(new IntoWorker(env, src, info[1].As<Napi::TypedArray>(), 0));
}

// zstdCompressBound(n): number
Napi::Value ZstdCompressBound(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsNumber()) throw_invalid(env, "zstdCompressBound(n) expects a size");
  double n = info[0].As<Napi::Number>().DoubleValue();
  if (!(n >= 0) || n > 1e12) throw_invalid(env, "zstdCompressBound: size out of range");
  try {
    return Napi::Number::New(env, double(copy::zstd_compress_bound(size_t(n))));
  } catch (const std::exception& e) {
    throw to_js_error(env, io::IoError("UNSUPPORTED", e.what()));
  }
}

// zstdInfo(): { version } or { error }
Napi::Value ZstdInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  std::string why;
  if (copy::zstd_available(&why))
    o.Set("version", copy::zstd_version());
  else
    o.Set("error", why);
  return o;
}

}  // namespace

void init_compress(Napi::Env env, Napi::Object exports) {
  exports.Set("zstdCompress", Napi::Function::New(env, ZstdCompress, "zstdCompress"));
  exports.Set("zstdDecompress", Napi::Function::New(env, ZstdDecompress, "zstdDecompress"));
  exports.Set("zstdCompressInto", Napi::Function::New(env, ZstdCompressInto, "zstdCompressInto"));
  exports.Set("zstdDecompressInto", Napi::Function::New(env, ZstdDecompressInto, "zstdDecompressInto"));
  exports.Set("zstdCompressBound", Napi::Function::New(env, ZstdCompressBound, "zstdCompressBound"));
  exports.Set("zstdInfo", Napi::Function::New(env, ZstdInfo, "zstdInfo"));
}

}  // namespace lowtide::napi
