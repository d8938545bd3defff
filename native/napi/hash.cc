// Block digests off the JS thread.
#include "copy/hash.h"
#include "copy/zero.h"
#include "crypto/aead.h"
#include "napi/async.h"
#include "napi/binding.h"
#include "napi/crypto_args.h"

namespace lowtide::napi {
namespace {

struct DigestResult {
  bool zero = false;  // every byte was zero: nothing was hashed
  copy::Digest digest{};
};

// digest(view, zeroCheck, macKey?): Promise<Buffer | null>. Hashes the view
// off the JS thread; resolves with the 32-byte SHA-256 (with `macKey`, a
// 32-byte key: HMAC-SHA256, the chunk id of an encrypted repository), or with
// null when `zeroCheck` is set and every byte is zero (zero blocks are never
// stored).
Napi::Value Digest(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsTypedArray()) throw_invalid(env, "digest(view) expects a Uint8Array");
  bool zero_check = info.Length() > 1 && info[1].ToBoolean();
  bool keyed = info.Length() > 2 && !info[2].IsUndefined();
  crypto::Key key{};
  if (keyed) key = key_arg(env, info[2], "digest");
  return run_async<DigestResult>(
      env, "lowtide:digest",
      [view = HeldView(info[0].As<Napi::TypedArray>()), zero_check, keyed, key](DigestResult& r) {
        if (zero_check && copy::is_zero(view.data, view.size)) {
          r.zero = true;
          return;
        }
        r.digest = keyed ? crypto::hmac_sha256(key, view.data, view.size) : copy::sha256(view.data, view.size);
      },
      [](Napi::Env env, DigestResult& r) -> Napi::Value {
        if (r.zero) return env.Null();
        return Napi::Buffer<uint8_t>::Copy(env, r.digest.data(), r.digest.size());
      });
}

// digestSync(view): Buffer — for small inputs and tests.
Napi::Value DigestSync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsTypedArray()) throw_invalid(env, "digestSync(view) expects a Uint8Array");
  Napi::TypedArray view = info[0].As<Napi::TypedArray>();
  auto* p = static_cast<const unsigned char*>(view.ArrayBuffer().Data()) + view.ByteOffset();
  copy::Digest d = copy::sha256(p, view.ByteLength());
  return Napi::Buffer<uint8_t>::Copy(env, d.data(), d.size());
}

}  // namespace

void init_hash(Napi::Env env, Napi::Object exports) {
  exports.Set("digest", Napi::Function::New(env, Digest, "digest"));
  exports.Set("digestSync", Napi::Function::New(env, DigestSync, "digestSync"));
}

}  // namespace lowtide::napi
