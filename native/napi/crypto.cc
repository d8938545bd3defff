// seal(view, key, aad): Promise<Buffer>; unseal(view, key, aad): Promise<number | null>
// AES-256-GCM objects of an encrypted repository (native/crypto/aead.h), on
// the addon's worker pool. unseal decrypts in place: the plaintext is
// view[12, 12 + n); null means the object failed authentication.
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "crypto/aead.h"
#include "napi/async.h"
#include "napi/binding.h"
#include "napi/crypto_args.h"

namespace lowtide::napi {
namespace {

struct Sealed {
  size_t size = 0;
};

Napi::Value Seal(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[0].IsTypedArray()) throw_invalid(env, "seal(view, key, aad)");
  crypto::Key key = key_arg(env, info[1], "seal");
  std::string aad = aad_arg(env, info[2], "seal");
  Napi::TypedArray in = info[0].As<Napi::TypedArray>();
  // The result is allocated here, on the JS thread, and filled in the pool:
  // no second buffer and no copy.
  Napi::Buffer<uint8_t> out = Napi::Buffer<uint8_t>::New(env, in.ByteLength() + crypto::kSealOverhead);
  return run_async<Sealed>(
      env, "lowtide:seal",
      [view = HeldView(in), dst = HeldView(out), key, aad = std::move(aad)](Sealed& r) {
        crypto::Bytes part{view.data, view.size};
        r.size = crypto::seal(key, {reinterpret_cast<const uint8_t*>(aad.data()), aad.size()}, &part, 1, dst.data);
      },
      [ref = std::make_shared<Napi::ObjectReference>(Napi::Persistent(out.As<Napi::Object>()))](Napi::Env, Sealed&) -> Napi::Value {
        return ref->Value();
      });
}

struct Opened {
  bool ok = false;
  size_t size = 0;
};

Napi::Value Unseal(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[0].IsTypedArray()) throw_invalid(env, "unseal(view, key, aad)");
  crypto::Key key = key_arg(env, info[1], "unseal");
  std::string aad = aad_arg(env, info[2], "unseal");
  return run_async<Opened>(
      env, "lowtide:unseal",
      [view = HeldView(info[0].As<Napi::TypedArray>()), key, aad = std::move(aad)](Opened& r) {
        r.ok = crypto::open_in_place(key, {reinterpret_cast<const uint8_t*>(aad.data()), aad.size()}, view.data, view.size, &r.size);
      },
      [](Napi::Env env, Opened& r) -> Napi::Value {
        if (!r.ok) return env.Null();
        return Napi::Number::New(env, double(r.size));
      });
}

}  // namespace

crypto::Key key_arg(Napi::Env env, const Napi::Value& v, const char* fn) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().ByteLength() != crypto::kKeySize)
    throw_invalid(env, std::string(fn) + ": the key must be 32 bytes");
  Napi::TypedArray a = v.As<Napi::TypedArray>();
  const auto* p = static_cast<const uint8_t*>(a.ArrayBuffer().Data()) + a.ByteOffset();
  crypto::Key key{};
  std::copy(p, p + key.size(), key.begin());
  return key;
}

std::string aad_arg(Napi::Env env, const Napi::Value& v, const char* fn) {
  if (!v.IsString()) throw_invalid(env, std::string(fn) + ": the associated data must be a string");
  return v.As<Napi::String>().Utf8Value();
}

void init_crypto(Napi::Env env, Napi::Object exports) {
  exports.Set("seal", Napi::Function::New(env, Seal, "seal"));
  exports.Set("unseal", Napi::Function::New(env, Unseal, "unseal"));
}

}  // namespace lowtide::napi
