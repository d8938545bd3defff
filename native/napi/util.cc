// Small synchronous helpers.
#include "copy/zero.h"
#include "host/file_lock.h"
#include "io/uring.h"
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

Napi::Value UringAvailable(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), io::Uring::available());
}

// tryLockExclusive(fd): boolean
Napi::Value TryLockExclusive(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsNumber()) throw_invalid(info.Env(), "tryLockExclusive(fd) expects a number");
  try {
    return Napi::Boolean::New(info.Env(), host::try_lock_exclusive(info[0].As<Napi::Number>().Int32Value()));
  } catch (const io::IoError& e) {
    throw to_js_error(info.Env(), e);
  }
}

}  // namespace

void init_util(Napi::Env env, Napi::Object exports) {
  exports.Set("isZero", Napi::Function::New(env, IsZero, "isZero"));
  exports.Set("ioUringAvailable", Napi::Function::New(env, UringAvailable, "ioUringAvailable"));
  exports.Set("tryLockExclusive", Napi::Function::New(env, TryLockExclusive, "tryLockExclusive"));
}

}  // namespace lowtide::napi
