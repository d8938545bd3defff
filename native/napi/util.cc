// Small synchronous helpers.
#include <fcntl.h>

#include <cstdlib>
#include <cstring>

#include "copy/zero.h"
#include "host/clone.h"
#include "host/file_lock.h"
#include "host/shared_map.h"
#include "io/uring.h"
#include "napi/async.h"
#include "napi/binding.h"

namespace lowtide::napi {
namespace {

// isZero(view: ArrayBufferView): boolean
Napi::Value IsZero(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsTypedArray()) throw_invalid(info.Env(), "isZero(view) expects a Uint8Array");
  Napi::TypedArray ta = info[0].As<Napi::TypedArray>();
  auto* base = static_cast<const unsigned char*>(ta.ArrayBuffer().Data()) + ta.ByteOffset();
  return Napi::Boolean::New(info.Env(), copy::is_zero(base, ta.ByteLength()));
}

Napi::Value UringAvailable(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), io::Uring::available()); }

// tryLockExclusive(fd) / tryLockShared(fd): boolean
Napi::Value TryLockExclusive(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsNumber()) throw_invalid(info.Env(), "tryLockExclusive(fd) expects a number");
  try {
    return Napi::Boolean::New(info.Env(), host::try_lock_exclusive(info[0].As<Napi::Number>().Int32Value()));
  } catch (const io::IoError& e) {
    throw to_js_error(info.Env(), e);
  }
}

Napi::Value TryLockShared(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsNumber()) throw_invalid(info.Env(), "tryLockShared(fd) expects a number");
  try {
    return Napi::Boolean::New(info.Env(), host::try_lock_shared(info[0].As<Napi::Number>().Int32Value()));
  } catch (const io::IoError& e) {
    throw to_js_error(info.Env(), e);
  }
}

// cloneFile(source, target): Promise<void>, a FICLONE clone of a whole file
// (host/clone.h), on the worker pool.
Napi::Value CloneFile(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsString() || !info[1].IsString())
    throw_invalid(env, "cloneFile(source, target) expects two strings");
  std::string source = info[0].As<Napi::String>().Utf8Value();
  std::string target = info[1].As<Napi::String>().Utf8Value();
  if (source.empty() || target.empty()) throw_invalid(env, "cloneFile: paths must not be empty");
  struct Done {};
  return run_async<Done>(
      env, "lowtide:cloneFile", [source = std::move(source), target = std::move(target)](Done&) { host::clone_file(source, target); },
      [](Napi::Env env, Done&) -> Napi::Value { return env.Undefined(); });
}

// alignedBuffer(size): a zero-filled Buffer whose memory is aligned to 4096
// bytes, for O_DIRECT writes. Owned by JS: freed by its finalizer.
Napi::Value AlignedBuffer(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsNumber()) throw_invalid(env, "alignedBuffer(size) expects a number");
  double d = info[0].As<Napi::Number>().DoubleValue();
  if (!(d > 0 && d <= 1073741824.0)) throw_invalid(env, "alignedBuffer: size must be from 1 byte to 1 GiB");
  size_t size = size_t(d);
  void* p = nullptr;
  if (posix_memalign(&p, 4096, size) != 0) throw to_js_error(env, io::IoError("INTERNAL", "out of memory"));
  std::memset(p, 0, size);
  return Napi::Buffer<uint8_t>::New(env, static_cast<uint8_t*>(p), size, [](Napi::Env, uint8_t* q) { std::free(q); });
}

// mapShared(path, writable, size): the first `size` bytes of the file,
// mapped MAP_SHARED (host/shared_map.h), as an ArrayBuffer; unmapped when
// the buffer is collected and no reader counts into it.
Napi::Value MapShared(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[0].IsString() || !info[1].IsBoolean() || !info[2].IsNumber())
    throw_invalid(env, "mapShared(path, writable, size) expects a string, a boolean and a number");
  double d = info[2].As<Napi::Number>().DoubleValue();
  if (!(d >= 8 && d <= 1048576.0) || d != double(uint64_t(d))) throw_invalid(env, "mapShared: size must be from 8 bytes to 1 MiB");
  std::shared_ptr<host::SharedMap> m;
  try {
    m = host::SharedMap::open(info[0].As<Napi::String>().Utf8Value(), size_t(d), info[1].As<Napi::Boolean>().Value());
  } catch (const io::IoError& e) {
    throw to_js_error(env, e);
  }
  auto* keep = new std::shared_ptr<host::SharedMap>(m);
  return Napi::ArrayBuffer::New(
      env, m->data(), m->size(), [](Napi::Env, void*, std::shared_ptr<host::SharedMap>* k) { delete k; }, keep);
}

// startWriteback(fd, offset, length): asks the kernel to start writing back
// dirty pages of that range now (sync_file_range SYNC_FILE_RANGE_WRITE, which
// does not wait), so a long copy's final fsync has little left to do.
Napi::Value StartWriteback(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[0].IsNumber() || !info[1].IsNumber() || !info[2].IsNumber())
    throw_invalid(env, "startWriteback(fd, offset, length) expects three numbers");
  int fd = info[0].As<Napi::Number>().Int32Value();
  double off = info[1].As<Napi::Number>().DoubleValue();
  double len = info[2].As<Napi::Number>().DoubleValue();
  if (!(off >= 0 && len >= 0)) throw_invalid(env, "startWriteback: offset and length must be non-negative");
  // Advisory: errors (e.g. EINVAL on file systems without it) are ignored.
  return Napi::Boolean::New(env, sync_file_range(fd, off64_t(off), off64_t(len), SYNC_FILE_RANGE_WRITE) == 0);
}

// setPoolThreads(n): the number of the addon's worker threads (1..256).
Napi::Value SetPoolThreads(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsNumber()) throw_invalid(env, "setPoolThreads(n) expects a number");
  double n = info[0].As<Napi::Number>().DoubleValue();
  if (!(n >= 1 && n <= 256)) throw_invalid(env, "setPoolThreads: n must be from 1 to 256");
  addon_data(env).pool.set_threads(unsigned(n));
  return env.Undefined();
}

// poolStats(): { threads, executed } of the addon's worker pool.
Napi::Value PoolStats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("threads", Napi::Number::New(env, addon_data(env).pool.threads()));
  o.Set("executed", Napi::Number::New(env, double(addon_data(env).pool.executed())));
  return o;
}

}  // namespace

void init_util(Napi::Env env, Napi::Object exports) {
  exports.Set("isZero", Napi::Function::New(env, IsZero, "isZero"));
  exports.Set("ioUringAvailable", Napi::Function::New(env, UringAvailable, "ioUringAvailable"));
  exports.Set("tryLockExclusive", Napi::Function::New(env, TryLockExclusive, "tryLockExclusive"));
  exports.Set("tryLockShared", Napi::Function::New(env, TryLockShared, "tryLockShared"));
  exports.Set("cloneFile", Napi::Function::New(env, CloneFile, "cloneFile"));
  exports.Set("alignedBuffer", Napi::Function::New(env, AlignedBuffer, "alignedBuffer"));
  exports.Set("mapShared", Napi::Function::New(env, MapShared, "mapShared"));
  exports.Set("startWriteback", Napi::Function::New(env, StartWriteback, "startWriteback"));
  exports.Set("setPoolThreads", Napi::Function::New(env, SetPoolThreads, "setPoolThreads"));
  exports.Set("poolStats", Napi::Function::New(env, PoolStats, "poolStats"));
}

}  // namespace lowtide::napi
