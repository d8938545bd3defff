// storeChunkFile(view, level, tmpPath, finalPath): Promise<{ written, storedBytes, encoding }>
// One repository chunk file (native/repo/chunk_file.h) on the libuv pool: one
// task per chunk in place of a stat, compressions, open, write, fsync, close
// and rename each crossing back to the JS thread.
#include "napi/binding.h"
#include "repo/chunk_file.h"

namespace lowtide::napi {
namespace {

class StoreWorker : public Napi::AsyncWorker {
 public:
  StoreWorker(Napi::Env env, Napi::TypedArray view, int level, std::string tmp, std::string final_path)
      : Napi::AsyncWorker(env, "lowtide:storeChunkFile"), deferred_(Napi::Promise::Deferred::New(env)), view_(view),
        level_(level), tmp_(std::move(tmp)), final_(std::move(final_path)) {}
  Napi::Promise promise() { return deferred_.Promise(); }
  void Execute() override {
    try {
      out_ = repo::store_chunk_file(view_.data, view_.size, level_, tmp_, final_);
    } catch (const io::IoError& e) {
      error_ = e;
      SetError(e.what());
    } catch (const std::exception& e) {
      error_ = io::IoError("INTERNAL", e.what());
      SetError(e.what());
    }
  }
  void OnOK() override {
    Napi::Env env = Env();
    Napi::Object o = Napi::Object::New(env);
    o.Set("written", Napi::Boolean::New(env, out_.written));
    o.Set("storedBytes", Napi::Number::New(env, double(out_.stored_bytes)));
    o.Set("encoding", Napi::String::New(env, out_.encoding == repo::ChunkEncoding::Zstd ? "zstd" : "raw"));
    deferred_.Resolve(o);
  }
  void OnError(const Napi::Error&) override { deferred_.Reject(to_js_error(Env(), error_).Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  HeldView view_;
  int level_;
  std::string tmp_, final_;
  repo::StoredChunk out_{};
  io::IoError error_{"INTERNAL", ""};
};

Napi::Value StoreChunkFile(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 4 || !info[0].IsTypedArray() || !info[1].IsNumber() || !info[2].IsString() || !info[3].IsString())
    throw_invalid(env, "storeChunkFile(view, level, tmpPath, finalPath)");
  int level = info[1].As<Napi::Number>().Int32Value();
  if (level < 1 || level > 22) throw_invalid(env, "storeChunkFile: level must be 1..22");
  std::string tmp = info[2].As<Napi::String>().Utf8Value();
  std::string final_path = info[3].As<Napi::String>().Utf8Value();
  if (tmp.empty() || final_path.find('/') == std::string::npos) throw_invalid(env, "storeChunkFile: paths must name files in directories");
  return queued(new StoreWorker(env, info[0].As<Napi::TypedArray>(), level, std::move(tmp), std::move(final_path)));
}

}  // namespace

void init_chunk_file(Napi::Env env, Napi::Object exports) {
  exports.Set("storeChunkFile", Napi::Function::New(env, StoreChunkFile, "storeChunkFile"));
}

}  // namespace lowtide::napi
