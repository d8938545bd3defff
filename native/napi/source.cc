// SourceHandle: a read-only block source opened off the JS thread.
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <memory>
#include <optional>

#include "io/aligned_memory.h"
#include "io/block_source.h"
#include "napi/binding.h"
#include "napi/source.h"

namespace lowtide::napi {

Napi::Object SourceHandle::Init(Napi::Env env) {
  Napi::Function ctor = DefineClass(env, "SourceHandle",
                                    {
                                        InstanceMethod<&SourceHandle::Info>("info"),
                                        InstanceMethod<&SourceHandle::Close>("close"),
                                        InstanceMethod<&SourceHandle::Probe>("probe"),
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

uint64_t monotonic_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
}

// One small read on the thread pool, timed around the pread itself (time
// spent waiting for a pool thread is not counted): the latency a small
// request of someone else's sees on this storage right now.
class ProbeWorker : public Napi::AsyncWorker {
 public:
  ProbeWorker(Napi::Env env, std::shared_ptr<io::BlockSource> source, uint64_t offset, uint32_t length)
      : Napi::AsyncWorker(env, "lowtide:probe"), deferred_(Napi::Promise::Deferred::New(env)),
        source_(std::move(source)), offset_(offset), length_(length) {}

  Napi::Promise promise() { return deferred_.Promise(); }

  void Execute() override {
    // One buffer per pool thread, kept: fresh memory costs page faults.
    thread_local std::unique_ptr<io::AlignedMemory> buf;
    const size_t align = std::max<size_t>(4096, source_->geometry().memory_alignment);
    if (!buf || buf->size() < length_) buf = std::make_unique<io::AlignedMemory>((length_ + align - 1) / align * align, align);
    uint64_t t0 = monotonic_ns();
    ssize_t n;
    do {
      n = pread(source_->fd(), buf->data(), length_, off_t(offset_));
    } while (n < 0 && errno == EINTR);
    latency_ns_ = monotonic_ns() - t0;
    if (n < 0) {
      int e = errno;
      error_ = io::IoError("IO_ERROR", source_->path() + ": probe read at offset " + std::to_string(offset_) + " failed: " +
                                           io::errno_text(e), e, int64_t(offset_));
    } else if (size_t(n) != length_) {
      error_ = io::IoError("SHORT_READ", source_->path() + ": probe read at offset " + std::to_string(offset_) + " returned " +
                                             std::to_string(n) + " of " + std::to_string(length_) + " bytes", 0, int64_t(offset_));
    }
    if (error_) SetError(error_->what());
  }
  void OnOK() override { deferred_.Resolve(Napi::Number::New(Env(), double(latency_ns_))); }
  void OnError(const Napi::Error&) override { deferred_.Reject(to_js_error(Env(), *error_).Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  std::shared_ptr<io::BlockSource> source_;
  uint64_t offset_;
  uint32_t length_;
  uint64_t latency_ns_ = 0;
  std::optional<io::IoError> error_;
};

}  // namespace

// probe(offset, length): Promise<number>, the read's latency in ns.
// offset and length must be multiples of the sector size (O_DIRECT).
Napi::Value SourceHandle::Probe(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!source_) throw to_js_error(env, io::IoError("CLOSED", "the source is closed"));
  if (info.Length() < 2 || !info[0].IsNumber() || !info[1].IsNumber()) throw_invalid(env, "probe(offset, length) expects two numbers");
  double off = info[0].As<Napi::Number>().DoubleValue();
  double len = info[1].As<Napi::Number>().DoubleValue();
  const io::SourceGeometry& g = source_->geometry();
  const double sector = g.direct ? g.logical_sector_size : 1;
  if (!(off >= 0) || std::floor(off) != off || std::fmod(off, sector) != 0)
    throw_invalid(env, "probe: offset must be a non-negative multiple of the sector size");
  if (!(len >= 1) || len > 1 << 20 || std::floor(len) != len || std::fmod(len, sector) != 0)
    throw_invalid(env, "probe: length must be a multiple of the sector size, at most 1 MiB");
  if (off + len > double(g.size)) throw to_js_error(env, io::IoError("OUT_OF_RANGE", "probe: the read reaches past the end of " + source_->path(), 0, int64_t(off)));
  return queued(new ProbeWorker(env, source_, uint64_t(off), uint32_t(len)));
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
  return queued(new OpenWorker(env, info[0].As<Napi::String>(), m));
}

}  // namespace

void init_source(Napi::Env env, Napi::Object exports) {
  exports.Set("SourceHandle", SourceHandle::Init(env));
  exports.Set("openSource", Napi::Function::New(env, OpenSource, "openSource"));
}

}  // namespace lowtide::napi
