// storeChunkFile(view, level, tmpPath, finalPath, key?, aad?): Promise<{ written, storedBytes, encoding }>
// One repository chunk file (native/repo/chunk_file.h) written off the JS
// thread: one task per chunk in place of a stat, compressions, open, write,
// fsync, close and rename each crossing back to the JS thread.
#include <string>
#include <utility>

#include "napi/async.h"
#include "napi/binding.h"
#include "napi/crypto_args.h"
#include "repo/chunk_file.h"

namespace lowtide::napi {
namespace {

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
  // An encrypted repository's chunk: sealed with `key`, its name as associated data.
  bool keyed = info.Length() > 4 && !info[4].IsUndefined();
  crypto::Key key{};
  std::string aad;
  if (keyed) {
    key = key_arg(env, info[4], "storeChunkFile");
    aad = aad_arg(env, info[5], "storeChunkFile");
  }
  return run_async<repo::StoredChunk>(
      env, "lowtide:storeChunkFile",
      [view = HeldView(info[0].As<Napi::TypedArray>()), level, tmp = std::move(tmp), final_path = std::move(final_path), keyed, key,
       aad = std::move(aad)](repo::StoredChunk& out) {
        out = repo::store_chunk_file(view.data, view.size, level, tmp, final_path, keyed ? &key : nullptr, aad);
      },
      [](Napi::Env env, repo::StoredChunk& out) -> Napi::Value {
        Napi::Object o = Napi::Object::New(env);
        o.Set("written", Napi::Boolean::New(env, out.written));
        o.Set("storedBytes", Napi::Number::New(env, double(out.stored_bytes)));
        o.Set("encoding", Napi::String::New(env, out.encoding == repo::ChunkEncoding::Zstd ? "zstd" : "raw"));
        return o;
      });
}

}  // namespace

void init_chunk_file(Napi::Env env, Napi::Object exports) {
  exports.Set("storeChunkFile", Napi::Function::New(env, StoreChunkFile, "storeChunkFile"));
}

}  // namespace lowtide::napi
