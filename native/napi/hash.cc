// Block digests off the JS thread.
#include "copy/hash.h"
#include "copy/zero.h"
#include "napi/binding.h"

namespace lowtide::napi {
namespace {

// Hashes one view on the libuv thread pool. Resolves with the 32-byte SHA-256,
// or with null when every byte is zero (zero blocks are never stored).
class DigestWorker : public Napi::AsyncWorker {
 public:
  DigestWorker(Napi::Env env, Napi::TypedArray view, bool zero_check)
      : Napi::AsyncWorker(env, "lowtide:digest"), deferred_(Napi::Promise::Deferred::New(env)), view_(view),
        zero_check_(zero_check) {}
  Napi::Promise promise() { return deferred_.Promise(); }

  void Execute() override {
    if (zero_check_ && copy::is_zero(view_.data, view_.size)) {
      zero_ = true;
      return;
    }
    try {
      digest_ = copy::sha256(view_.data, view_.size);
    } catch (const std::exception& e) {
      SetError(e.what());
    }
  }
  void OnOK() override {
    Napi::Env env = Env();
    if (zero_) {
      deferred_.Resolve(env.Null());
    } else {
      deferred_.Resolve(Napi::Buffer<uint8_t>::Copy(env, digest_.data(), digest_.size()));
    }
  }
  void OnError(const Napi::Error& e) override {
    deferred_.Reject(to_js_error(Env(), io::IoError("INTERNAL", e.Message())).Value());
  }

 private:
  Napi::Promise::Deferred deferred_;
  HeldView view_;
  bool zero_check_;
  bool zero_ = false;
  copy::Digest digest_{};
};

// digest(view, zeroCheck): Promise<Buffer | null>
Napi::Value Digest(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsTypedArray()) throw_invalid(env, "digest(view) expects a Uint8Array");
  bool zero_check = info.Length() > 1 && info[1].ToBoolean();
  return queued(new DigestWorker(env, info[0].As<Napi::TypedArray>(), zero_check));
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
