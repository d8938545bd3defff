// SourceHandle: a read-only block source opened off the JS thread.
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <memory>
#include <string>

#include "io/aligned_memory.h"
#include "io/block_source.h"
#include "napi/async.h"
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
  if (info.Length() != 1 || !info[0].IsExternal()) throw_invalid(info.Env(), "SourceHandle is created by openSource()");
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

// One small read, timed around the pread itself (time spent waiting for a
// worker thread is not counted): the latency a small request of someone
// else's sees on this storage right now. Returns it in ns.
uint64_t probe_read(const io::BlockSource& source, uint64_t offset, uint32_t length) {
  // One buffer per worker thread, kept: fresh memory costs page faults.
  thread_local std::unique_ptr<io::AlignedMemory> buf;
  const size_t align = std::max<size_t>(4096, source.geometry().memory_alignment);
  if (!buf || buf->size() < length) buf = std::make_unique<io::AlignedMemory>((length + align - 1) / align * align, align);
  uint64_t t0 = monotonic_ns();
  ssize_t n;
  do {
    n = pread(source.fd(), buf->data(), length, off_t(offset));
  } while (n < 0 && errno == EINTR);
  uint64_t latency_ns = monotonic_ns() - t0;
  if (n < 0) {
    int e = errno;
    throw io::IoError("IO_ERROR", source.path() + ": probe read at offset " + std::to_string(offset) + " failed: " + io::errno_text(e),
                      e, int64_t(offset));
  }
  if (size_t(n) != length)
    throw io::IoError("SHORT_READ",
                      source.path() + ": probe read at offset " + std::to_string(offset) + " returned " + std::to_string(n) + " of " +
                          std::to_string(length) + " bytes",
                      0, int64_t(offset));
  return latency_ns;
}

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
  if (off + len > double(g.size))
    throw to_js_error(env, io::IoError("OUT_OF_RANGE", "probe: the read reaches past the end of " + source_->path(), 0, int64_t(off)));
  return run_async<uint64_t>(
      env, "lowtide:probe",
      [source = source_, offset = uint64_t(off), length = uint32_t(len)](uint64_t& latency_ns) {
        latency_ns = probe_read(*source, offset, length);
      },
      [](Napi::Env env, uint64_t& latency_ns) -> Napi::Value { return Napi::Number::New(env, double(latency_ns)); });
}

namespace {

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
  return run_async<std::shared_ptr<io::BlockSource>>(
      env, "lowtide:open",
      [path = std::string(info[0].As<Napi::String>()), m](std::shared_ptr<io::BlockSource>& source) {
        source = io::BlockSource::open(path, m);
      },
      [](Napi::Env env, std::shared_ptr<io::BlockSource>& source) -> Napi::Value {
        auto holder = std::make_unique<std::shared_ptr<io::BlockSource>>(source);
        Napi::Value ext = Napi::External<std::shared_ptr<io::BlockSource>>::New(env, holder.get());
        return addon_data(env).source_ctor.New({ext});
      });
}

}  // namespace

void init_source(Napi::Env env, Napi::Object exports) {
  exports.Set("SourceHandle", SourceHandle::Init(env));
  exports.Set("openSource", Napi::Function::New(env, OpenSource, "openSource"));
}

}  // namespace lowtide::napi
