// SourceHandle: a read-only block source opened off the JS thread.
#include <memory>
#include <optional>

#include "io/block_source.h"
#include "napi/binding.h"
#include "napi/source.h"

namespace lowtide::napi {

Napi::Object SourceHandle::Init(Napi::Env env) {
  Napi::Function ctor = DefineClass(env, "SourceHandle",
                                    {
                                        InstanceMethod<&SourceHandle::Info>("info"),
                                        InstanceMethod<&SourceHandle::Close>("close"),
                                    });
  addon_data(env).source_ctor = Napi::Persistent(ctor);
  return ctor;
}

SourceHandle::SourceHandle(const Napi::CallbackInfo& info) : Napi::ObjectWrap<SourceHandle>(info) {
  if (info.Length() != 1 || !info[0].IsExternal())
    throw_invalid(info.Env(), "SourceHandle is created by openSource()");
  auto* holder = info[0].As<Napi::External<std::shared_ptr<io::BlockSource>>>().Data();
  source_ = *holder;
}

Napi::Value SourceHandle::Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!source_) throw to_js_error(env, io::IoError("CLOSED", "the source is closed"));
  const io::SourceGeometry& g = source_->geometry();
  Napi::Object o = Napi::Object::New(env);
  o.Set("size", Napi::Number::New(env, double(g.size)));
  o.Set("logicalSectorSize", Napi::Number::New(env, g.logical_sector_size));
  o.Set("physicalSectorSize", Napi::Number::New(env, g.physical_sector_size));
  o.Set("direct", Napi::Boolean::New(env, g.direct));
  o.Set("kind", Napi::String::New(env, g.block_device ? "block" : "file"));
  return o;
}

Napi::Value SourceHandle::Close(const Napi::CallbackInfo& info) {
  source_.reset();  // readers keep their own reference until they finish
  return info.Env().Undefined();
}

namespace {

class OpenWorker : public Napi::AsyncWorker {
 public:
  OpenWorker(Napi::Env env, std::string path, io::DirectMode mode)
      : Napi::AsyncWorker(env, "lowtide:open"), deferred_(Napi::Promise::Deferred::New(env)),
        path_(std::move(path)), mode_(mode) {}

  Napi::Promise promise() { return deferred_.Promise(); }

  void Execute() override {
    try {
      source_ = io::BlockSource::open(path_, mode_);
    } catch (const io::IoError& e) {
      error_ = e;
      SetError(e.what());
    }
  }
  void OnOK() override {
    Napi::Env env = Env();
    auto holder = std::make_unique<std::shared_ptr<io::BlockSource>>(source_);
    Napi::Value ext = Napi::External<std::shared_ptr<io::BlockSource>>::New(env, holder.get());
    Napi::Object handle = addon_data(env).source_ctor.New({ext});
    deferred_.Resolve(handle);
  }
  void OnError(const Napi::Error&) override {
    deferred_.Reject(to_js_error(Env(), error_ ? *error_ : io::IoError("OPEN_FAILED", "open failed")).Value());
  }

 private:
  Napi::Promise::Deferred deferred_;
  std::string path_;
  io::DirectMode mode_;
  std::shared_ptr<io::BlockSource> source_;
  std::optional<io::IoError> error_;
};

// openSource(path: string, direct: 'auto' | 'on' | 'off'): Promise<SourceHandle>
Napi::Value OpenSource(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsString() || !info[1].IsString())
    throw_invalid(env, "openSource(path, direct) expects two strings");
  std::string mode = info[1].As<Napi::String>();
  io::DirectMode m;
  if (mode == "auto") m = io::DirectMode::Auto;
  else if (mode == "on") m = io::DirectMode::On;
  else if (mode == "off") m = io::DirectMode::Off;
  else throw_invalid(env, "direct must be 'auto', 'on' or 'off'");
  auto* w = new OpenWorker(env, info[0].As<Napi::String>(), m);
  Napi::Promise p = w->promise();
  w->Queue();
  return p;
}

}  // namespace

void init_source(Napi::Env env, Napi::Object exports) {
  exports.Set("SourceHandle", SourceHandle::Init(env));
  exports.Set("openSource", Napi::Function::New(env, OpenSource, "openSource"));
}

}  // namespace lowtide::napi
