// zstd off the JS thread (native/copy/zstd.h).
#include "copy/zstd.h"

#include <cstdlib>
#include <exception>
#include <utility>

#include "napi/async.h"
#include "napi/binding.h"

namespace lowtide::napi {
namespace {

// zstd reports failures as std::exception; they reach JS with `code`
// (INTERNAL for compression, INVALID_ARGUMENT for input that does not
// decompress).
template <class F>
auto zstd_call(const char* code, F f) -> decltype(f()) {
  try {
    return f();
  } catch (const std::exception& e) {
    throw io::IoError(code, e.what());
  }
}

// A compression's or decompression's output: malloc'ed memory, handed to JS
// without a copy (freed by the Buffer) or freed here if it never gets there.
struct ZstdResult {
  copy::ZstdOutput out{};
  ZstdResult() = default;
  ZstdResult(const ZstdResult&) = delete;
  ZstdResult& operator=(const ZstdResult&) = delete;
  ~ZstdResult() { std::free(out.data); }
};

Napi::Value zstd_buffer(Napi::Env env, ZstdResult& r) {
  unsigned char* p = std::exchange(r.out.data, nullptr);
  return Napi::Buffer<unsigned char>::New(env, p, r.out.size, [](Napi::Env, unsigned char* q) { std::free(q); });
}

Napi::Value size_number(Napi::Env env, size_t& n) { return Napi::Number::New(env, double(n)); }

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
  return run_async<ZstdResult>(
      env, "lowtide:zstdCompress",
      [view = HeldView(view), level](ZstdResult& r) {
        r.out = zstd_call("INTERNAL", [&] { return copy::zstd_compress(view.data, view.size, level); });
      },
      zstd_buffer);
}

// zstdDecompress(view, maxSize): Promise<Buffer>
Napi::Value ZstdDecompress(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::TypedArray view = view_arg(info, "zstdDecompress");
  if (info.Length() < 2 || !info[1].IsNumber()) throw_invalid(env, "zstdDecompress(view, maxSize) expects a maximum size");
  double max = info[1].As<Napi::Number>().DoubleValue();
  if (!(max >= 0) || max > 1e12) throw_invalid(env, "zstdDecompress: maxSize out of range");
  size_t max_size = size_t(max);
  return run_async<ZstdResult>(
      env, "lowtide:zstdDecompress",
      [view = HeldView(view), max_size](ZstdResult& r) {
        r.out = zstd_call("INVALID_ARGUMENT", [&] { return copy::zstd_decompress(view.data, view.size, max_size); });
      },
      zstd_buffer);
}

// zstdCompressInto(src, dst, level): Promise<number>, the size written.
Napi::Value ZstdCompressInto(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::TypedArray src = view_arg(info, "zstdCompressInto");
  if (info.Length() < 2 || !info[1].IsTypedArray()) throw_invalid(env, "zstdCompressInto(src, dst, level) expects a Uint8Array dst");
  Napi::TypedArray dst = info[1].As<Napi::TypedArray>();
  int level = level_arg(info, 2, "zstdCompressInto");
  return run_async<size_t>(
      env, "lowtide:zstdCompressInto",
      [src = HeldView(src), dst = HeldView(dst), level](size_t& n) {
        n = zstd_call("INTERNAL", [&] { return copy::zstd_compress_into(src.data, src.size, dst.data, dst.size, level); });
      },
      size_number);
}

// zstdDecompressInto(src, dst): Promise<number>, the size written.
Napi::Value ZstdDecompressInto(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::TypedArray src = view_arg(info, "zstdDecompressInto");
  if (info.Length() < 2 || !info[1].IsTypedArray()) throw_invalid(env, "zstdDecompressInto(src, dst) expects a Uint8Array dst");
  return run_async<size_t>(
      env, "lowtide:zstdDecompressInto",
      [src = HeldView(src), dst = HeldView(info[1].As<Napi::TypedArray>())](size_t& n) {
        n = zstd_call("INVALID_ARGUMENT", [&] { return copy::zstd_decompress_into(src.data, src.size, dst.data, dst.size); });
      },
      size_number);
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
  if (copy::zstd_available(&why)) o.Set("version", copy::zstd_version());
  else o.Set("error", why);
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
