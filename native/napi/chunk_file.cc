// storeChunkFile(view, level, tmpPath, finalPath, key?, aad?): Promise<{ written, storedBytes, encoding }>
// One repository chunk file (native/repo/chunk_file.h) written off the JS
// thread: one task per chunk in place of a stat, compressions, open, write,
// fsync, close and rename each crossing back to the JS thread.
// encodeChunk(view, dst, level, key?, aad?): Promise<number>
// The same chunk's bytes in memory, for a remote repository: sample,
// compression, header and sealing in one task, written into `dst` (reused by
// the caller: fresh memory costs a page fault per page).
#include <string>
#include <utility>

#include "napi/async.h"
#include "napi/binding.h"
#include "napi/crypto_args.h"
#include "repo/chunk_file.h"

namespace lowtide::napi {
namespace {

// An encrypted repository's chunk is sealed with the key at info[at], its
// name (info[at + 1]) as associated data; no key (absent or undefined): plain.
struct Seal {
  bool keyed = false;
  crypto::Key key{};
  std::string aad;
  const crypto::Key* key_or_null() const { return keyed ? &key : nullptr; }
};

Seal seal_args(const Napi::CallbackInfo& info, size_t at, const char* fn) {
  Seal s;
  s.keyed = info.Length() > at && !info[at].IsUndefined();
  if (s.keyed) {
    s.key = key_arg(info.Env(), info[at], fn);
    s.aad = aad_arg(info.Env(), info[at + 1], fn);
  }
  return s;
}

Napi::Value StoreChunkFile(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 4 || !info[0].IsTypedArray() || !info[1].IsNumber() || !info[2].IsString() || !info[3].IsString())
    throw_invalid(env, "storeChunkFile(view, level, tmpPath, finalPath)");
  int level = info[1].As<Napi::Number>().Int32Value();
  if (level < 1 || level > 22) throw_invalid(env, "storeChunkFile: level must be 1..22");
  std::string tmp = info[2].As<Napi::String>().Utf8Value();
  std::string final_path = info[3].As<Napi::String>().Utf8Value();
  if (tmp.empty() || final_path.find('/') == std::string::npos)
    throw_invalid(env, "storeChunkFile: paths must name files in directories");
  Seal seal = seal_args(info, 4, "storeChunkFile");
  return run_async<repo::StoredChunk>(
      env, "lowtide:storeChunkFile",
      [view = HeldView(info[0].As<Napi::TypedArray>()), level, tmp = std::move(tmp), final_path = std::move(final_path),
       seal = std::move(seal)](repo::StoredChunk& out) {
        out = repo::store_chunk_file(view.data, view.size, level, tmp, final_path, seal.key_or_null(), seal.aad);
      },
      [](Napi::Env env, repo::StoredChunk& out) -> Napi::Value {
        Napi::Object o = Napi::Object::New(env);
        o.Set("written", Napi::Boolean::New(env, out.written));
        o.Set("storedBytes", Napi::Number::New(env, double(out.stored_bytes)));
        o.Set("encoding", Napi::String::New(env, out.encoding == repo::ChunkEncoding::Zstd ? "zstd" : "raw"));
        return o;
      });
}

Napi::Value EncodeChunk(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[0].IsTypedArray() || !info[1].IsTypedArray() || !info[2].IsNumber())
    throw_invalid(env, "encodeChunk(view, dst, level)");
  int level = info[2].As<Napi::Number>().Int32Value();
  if (level < 1 || level > 22) throw_invalid(env, "encodeChunk: level must be 1..22");
  Napi::TypedArray view = info[0].As<Napi::TypedArray>();
  Napi::TypedArray dst = info[1].As<Napi::TypedArray>();
  if (dst.ByteLength() < view.ByteLength() + repo::kChunkObjectOverhead)
    throw_invalid(env,
                  "encodeChunk: dst must have room for the view's bytes and " + std::to_string(repo::kChunkObjectOverhead) + " more");
  Seal seal = seal_args(info, 3, "encodeChunk");
  return run_async<size_t>(
      env, "lowtide:encodeChunk",
      [view = HeldView(view), dst = HeldView(dst), level, seal = std::move(seal)](size_t& n) {
        n = repo::encode_chunk_object(view.data, view.size, level, seal.key_or_null(), seal.aad, dst.data, dst.size);
      },
      [](Napi::Env env, size_t& n) -> Napi::Value { return Napi::Number::New(env, double(n)); });
}

}  // namespace

void init_chunk_file(Napi::Env env, Napi::Object exports) {
  exports.Set("storeChunkFile", Napi::Function::New(env, StoreChunkFile, "storeChunkFile"));
  exports.Set("encodeChunk", Napi::Function::New(env, EncodeChunk, "encodeChunk"));
}

}  // namespace lowtide::napi
