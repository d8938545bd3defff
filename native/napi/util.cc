// Small synchronous helpers.
#include "copy/zero.h"
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

}  // namespace

void init_util(Napi::Env env, Napi::Object exports) {
  exports.Set("isZero", Napi::Function::New(env, IsZero, "isZero"));
  exports.Set("ioUringAvailable", Napi::Function::New(env, UringAvailable, "ioUringAvailable"));
}

}  // namespace lowtide::napi
