// Reader: one running read of a source. JS pulls batches of completed blocks
// with next(), gives buffers back with release(slot), and may change the queue
// depth and request size at any time.
#include <memory>
#include <optional>
#include <vector>

#include "host/shared_map.h"
#include "io/read_engine.h"
#include "napi/binding.h"
#include "napi/source.h"

namespace lowtide::napi {
namespace {

class Reader;
void call_js(Napi::Env env, Napi::Function, Reader* reader, void*);
using Tsfn = Napi::TypedThreadSafeFunction<Reader, void, call_js>;

uint32_t get_u32(Napi::Env env, Napi::Object o, const char* key, uint32_t def) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined()) return def;
  if (!v.IsNumber()) throw_invalid(env, std::string(key) + " must be a number");
  double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= 0 && d <= 4294967295.0) || d != double(uint64_t(d)))
    throw_invalid(env, std::string(key) + " must be an integer from 0 to 2^32-1");
  return uint32_t(d);
}

class Reader : public Napi::ObjectWrap<Reader> {
 public:
  static Napi::Object Init(Napi::Env env) {
    Napi::Function ctor = DefineClass(env, "Reader",
                                      {
                                          InstanceMethod<&Reader::Next>("next"),
                                          InstanceMethod<&Reader::Release>("release"),
                                          InstanceMethod<&Reader::SetQueueDepth>("setQueueDepth"),
                                          InstanceMethod<&Reader::SetBlockSize>("setBlockSize"),
                                          InstanceMethod<&Reader::SetPacing>("setPacing"),
                                          InstanceMethod<&Reader::ShareReads>("shareReads"),
                                          InstanceMethod<&Reader::Stats>("stats"),
                                          InstanceMethod<&Reader::Close>("close"),
                                      });
    addon_data(env).reader_ctor = Napi::Persistent(ctor);
    return ctor;
  }

  // new Reader(sourceHandle, extents: Float64Array [offset, length, ...], options
  //            [, deviceHandle, deviceOffsets: Float64Array (one per extent, -1: read from the source)
  //             [, deviceRuns: Float64Array [offset, length, deviceOffset, ...] (an offset table's runs;
  //                instead of deviceOffsets, which is then undefined)]])
  explicit Reader(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Reader>(info), env_(info.Env()) {
    Napi::Env env = info.Env();
    if (info.Length() < 3 || !info[0].IsObject() || !info[1].IsTypedArray() || !info[2].IsObject())
      throw_invalid(env, "Reader(source, extents, options) expects a SourceHandle, a Float64Array and an object");
    Napi::Object src_obj = info[0].As<Napi::Object>();
    if (!src_obj.InstanceOf(addon_data(env).source_ctor.Value())) throw_invalid(env, "Reader expects a SourceHandle");
    std::shared_ptr<io::BlockSource> source = SourceHandle::Unwrap(src_obj)->source();
    if (!source) throw to_js_error(env, io::IoError("CLOSED", "the source is closed"));
    Napi::TypedArray ta = info[1].As<Napi::TypedArray>();
    if (ta.TypedArrayType() != napi_float64_array || ta.ElementLength() % 2 != 0)
      throw_invalid(env, "extents must be a Float64Array of offset/length pairs");
    Napi::Float64Array fa = ta.As<Napi::Float64Array>();
    bool any_empty = false;
    for (size_t i = 0; i < fa.ElementLength(); i += 2) {
      double off = fa[i], len = fa[i + 1];
      if (!(off >= 0 && len >= 0) || off != double(uint64_t(off)) || len != double(uint64_t(len)))
        throw_invalid(env, "extent offsets and lengths must be non-negative integers");
      if (len == 0) any_empty = true;
    }
    const bool with_device = info.Length() > 3 && !info[3].IsUndefined();
    const bool with_offsets = with_device && info.Length() > 4 && !info[4].IsUndefined();
    const bool with_runs = with_device && info.Length() > 5 && !info[5].IsUndefined();
    if (with_offsets == with_runs && with_device)
      throw_invalid(env, "Reader expects either deviceOffsets or deviceRuns with a device");
    io::ReadConfig cfg;
    std::vector<io::Extent> extents;
    if (!with_offsets && !any_empty) {
      // Read in place (a plan may hold millions of extents): the reference keeps
      // the array alive until this Reader, which joins the engine first, is gone.
      extents_ref_ = Napi::Persistent(fa);
      cfg.extent_pairs = fa.Data();
      cfg.extent_count = fa.ElementLength() / 2;
    } else {
      extents.reserve(fa.ElementLength() / 2);
      for (size_t i = 0; i < fa.ElementLength(); i += 2) extents.push_back({uint64_t(fa[i]), uint64_t(fa[i + 1])});
    }
    std::shared_ptr<io::BlockSource> device;
    if (with_device && !info[3].IsUndefined()) {
      if (!info[3].IsObject() || !info[3].As<Napi::Object>().InstanceOf(addon_data(env).source_ctor.Value()))
        throw_invalid(env, "Reader expects a SourceHandle as the device");
      device = SourceHandle::Unwrap(info[3].As<Napi::Object>())->source();
      if (!device) throw to_js_error(env, io::IoError("CLOSED", "the device is closed"));
    }
    if (with_runs) {
      if (!info[5].IsTypedArray() || info[5].As<Napi::TypedArray>().TypedArrayType() != napi_float64_array ||
          info[5].As<Napi::TypedArray>().ElementLength() % 3 != 0)
        throw_invalid(env, "deviceRuns must be a Float64Array of offset/length/device offset triples");
      Napi::Float64Array r = info[5].As<Napi::Float64Array>();
      for (size_t i = 0; i < r.ElementLength(); ++i) {
        const double v = r[i];
        if (v == -1 && i % 3 == 2) continue;
        if (!(v >= 0 && v <= 9007199254740991.0) || v != double(uint64_t(v)))
          throw_invalid(env, "device runs must be non-negative integers (a device offset may be -1)");
      }
      // Read in place, like the extents (the engine checks their order).
      runs_ref_ = Napi::Persistent(r);
      cfg.device_runs = r.Data();
      cfg.device_run_count = r.ElementLength() / 3;
    }
    if (with_offsets) {
      if (!info[4].IsTypedArray() || info[4].As<Napi::TypedArray>().TypedArrayType() != napi_float64_array)
        throw_invalid(env, "deviceOffsets must be a Float64Array");
      Napi::Float64Array d = info[4].As<Napi::Float64Array>();
      if (d.ElementLength() != extents.size()) throw_invalid(env, "deviceOffsets must have one entry per extent");
      cfg.device_offsets.assign(extents.size(), -1);
      for (size_t i = 0; i < extents.size(); ++i) {
        double v = d[i];
        if (v == -1) continue;
        if (!(v >= 0 && v <= 9007199254740991.0) || v != double(uint64_t(v)))
          throw_invalid(env, "device offsets must be non-negative integers or -1");
        cfg.device_offsets[i] = int64_t(v);
      }
    }
    Napi::Object o = info[2].As<Napi::Object>();
    cfg.block_size = get_u32(env, o, "blockSize", cfg.block_size);
    cfg.max_block_size = get_u32(env, o, "maxBlockSize", cfg.block_size);
    cfg.queue_depth = get_u32(env, o, "queueDepth", cfg.queue_depth);
    cfg.max_queue_depth = get_u32(env, o, "maxQueueDepth", cfg.queue_depth);
    cfg.held_buffers = get_u32(env, o, "heldBuffers", cfg.held_buffers);
    Napi::Value pacing = o.Get("pacingNs");
    if (pacing.IsNumber()) {
      double ns = pacing.As<Napi::Number>().DoubleValue();
      cfg.pacing_ns = ns > 0 && ns <= 60e9 ? uint64_t(ns) : 0;
    }
    Napi::Value ordered = o.Get("ordered");
    if (!ordered.IsUndefined()) cfg.ordered = ordered.ToBoolean();
    cfg.split_within_extents = o.Get("splitWithinExtents").ToBoolean();
    if (cfg.block_size == 0 || cfg.queue_depth == 0) throw_invalid(env, "blockSize and queueDepth must be positive");
    std::string engine = o.Get("engine").IsString() ? std::string(o.Get("engine").As<Napi::String>()) : "auto";
    io::EngineKind kind;
    if (engine == "auto") kind = io::EngineKind::Auto;
    else if (engine == "io_uring") kind = io::EngineKind::Uring;
    else if (engine == "threads") kind = io::EngineKind::Threads;
    else throw_invalid(env, "engine must be 'auto', 'io_uring' or 'threads'");

    try {
      engine_ = io::ReadEngine::create(kind, source, std::move(extents), cfg, std::move(device));
    } catch (const io::IoError& e) {
      throw to_js_error(env, e);
    }

    // The slab is exposed once as an external ArrayBuffer; blocks are views
    // into it. The ArrayBuffer's finalizer keeps the memory alive as long as
    // any view exists, even after the engine is gone.
    auto* keep = new std::shared_ptr<io::AlignedMemory>(engine_->slab_memory());
    slab_ = Napi::Persistent(Napi::ArrayBuffer::New(
        env, engine_->slab(), engine_->slot_size() * engine_->slot_count(),
        [](Napi::Env, void*, std::shared_ptr<io::AlignedMemory>* k) { delete k; }, keep));
    Napi::Object self = info.This().As<Napi::Object>();
    self.Set("buffer", slab_.Value());
    self.Set("slotSize", Napi::Number::New(env, double(engine_->slot_size())));
    self.Set("slotCount", Napi::Number::New(env, double(engine_->slot_count())));
    self.Set("engine", Napi::String::New(env, engine_->name()));

    tsfn_ = Tsfn::New(env, "lowtide:read", 0, 1, this);
    tsfn_.Unref(env);
    Ref();  // alive while the engine runs, even if JS drops every reference
    napi_add_env_cleanup_hook(env, &Reader::OnEnvCleanup, this);
    hook_installed_ = true;
    Tsfn tsfn = tsfn_;
    engine_->start([tsfn]() mutable { tsfn.NonBlockingCall(); });
  }

  ~Reader() override {
    if (hook_installed_) napi_remove_env_cleanup_hook(env_, &Reader::OnEnvCleanup, this);
    if (engine_) {
      engine_->request_stop();
      engine_->join();
    }
  }

  // Runs on the JS thread whenever the engine signals.
  void OnSignal() {
    Deliver();
    if (!cleaned_ && engine_->finished()) Cleanup();
  }

 private:
  static void OnEnvCleanup(void* arg) {
    auto* self = static_cast<Reader*>(arg);
    self->hook_installed_ = false;
    self->engine_->request_stop();
    self->engine_->join();
  }

  // Resolves the pending next() if there is anything to give.
  void Deliver() {
    if (!pending_) return;
    std::vector<io::Completion> out;
    std::optional<io::IoError> err;
    io::EngineStatus st = engine_->take(out, err);
    Napi::Env env = env_;
    Napi::HandleScope scope(env);
    if (!out.empty()) {
      Napi::Float64Array batch = Napi::Float64Array::New(env, out.size() * 5);
      for (size_t i = 0; i < out.size(); ++i) {
        const io::Completion& c = out[i];
        batch[i * 5 + 0] = double(c.slot);
        batch[i * 5 + 1] = double(c.offset);
        batch[i * 5 + 2] = double(c.length);
        batch[i * 5 + 3] = double(size_t(c.slot) * engine_->slot_size() + c.data_offset);
        batch[i * 5 + 4] = double(c.latency_ns);
      }
      Resolve(batch);
    } else if (st == io::EngineStatus::Failed) {
      Napi::Promise::Deferred d = *pending_;
      pending_.reset();
      if (!cleaned_) tsfn_.Unref(env);
      d.Reject(to_js_error(env, *err).Value());
    } else if (st != io::EngineStatus::Running) {
      Resolve(env.Null());
    }
  }

  void Resolve(Napi::Value v) {
    Napi::Promise::Deferred d = *pending_;
    pending_.reset();
    if (!cleaned_) tsfn_.Unref(env_);
    d.Resolve(v);
  }

  void Cleanup() {
    cleaned_ = true;
    engine_->join();
    if (hook_installed_) {
      napi_remove_env_cleanup_hook(env_, &Reader::OnEnvCleanup, this);
      hook_installed_ = false;
    }
    tsfn_.Release();
    for (auto& d : closing_) d.Resolve(env_.Undefined());
    closing_.clear();
    Unref();
  }

  Napi::Value Next(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (pending_) throw to_js_error(env, io::IoError("BUSY", "next() called while another next() is pending"));
    pending_ = Napi::Promise::Deferred::New(env);
    Napi::Promise p = pending_->Promise();
    if (!cleaned_) tsfn_.Ref(env);
    Deliver();
    return p;
  }

  Napi::Value Release(const Napi::CallbackInfo& info) {
    if (info.Length() < 1 || !info[0].IsNumber()) throw_invalid(info.Env(), "release(slot) expects a number");
    return Napi::Boolean::New(info.Env(), engine_->release(info[0].As<Napi::Number>().Uint32Value()));
  }

  Napi::Value SetQueueDepth(const Napi::CallbackInfo& info) {
    if (info.Length() < 1 || !info[0].IsNumber()) throw_invalid(info.Env(), "setQueueDepth(n) expects a number");
    engine_->set_queue_depth(info[0].As<Napi::Number>().Uint32Value());
    return info.Env().Undefined();
  }

  Napi::Value SetBlockSize(const Napi::CallbackInfo& info) {
    if (info.Length() < 1 || !info[0].IsNumber()) throw_invalid(info.Env(), "setBlockSize(n) expects a number");
    engine_->set_block_size(info[0].As<Napi::Number>().Uint32Value());
    return info.Env().Undefined();
  }

  // setPacing(ns): minimum time between read submissions.
  Napi::Value SetPacing(const Napi::CallbackInfo& info) {
    if (info.Length() < 1 || !info[0].IsNumber()) throw_invalid(info.Env(), "setPacing(ns) expects a number");
    double ns = info[0].As<Napi::Number>().DoubleValue();
    if (!(ns >= 0)) ns = 0;
    if (ns > 60e9) ns = 60e9;
    engine_->set_pacing(uint64_t(ns));
    return info.Env().Undefined();
  }

  // shareReads(map: ArrayBuffer from mapShared(path, true), index): adds the
  // reads handed to the kernel, so far and from now on, to the 64-bit
  // counter at map[8 * index] (atomically: other processes read it).
  Napi::Value ShareReads(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 2 || !info[0].IsArrayBuffer() || !info[1].IsNumber())
      throw_invalid(env, "shareReads(map, index) expects an ArrayBuffer and a number");
    Napi::ArrayBuffer ab = info[0].As<Napi::ArrayBuffer>();
    std::shared_ptr<host::SharedMap> m = host::SharedMap::find(ab.Data());
    if (!m || !m->writable()) throw_invalid(env, "shareReads: the buffer is not a writable map from mapShared()");
    double index = info[1].As<Napi::Number>().DoubleValue();
    if (!(index >= 0) || index != double(uint64_t(index)) || (uint64_t(index) + 1) * 8 > m->size())
      throw_invalid(env, "shareReads: index out of range");
    auto* counter = reinterpret_cast<uint64_t*>(m->data() + uint64_t(index) * 8);
    engine_->share_reads(m, counter);
    return env.Undefined();
  }

  Napi::Value Stats(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    io::EngineStats s = engine_->stats();
    Napi::Object o = Napi::Object::New(env);
    o.Set("requestsCompleted", Napi::Number::New(env, double(s.requests_completed)));
    o.Set("bytesDelivered", Napi::Number::New(env, double(s.bytes_delivered)));
    o.Set("bytesRead", Napi::Number::New(env, double(s.bytes_read)));
    o.Set("queueDepth", Napi::Number::New(env, s.queue_depth));
    o.Set("blockSize", Napi::Number::New(env, s.block_size));
    o.Set("inFlight", Napi::Number::New(env, s.in_flight));
    o.Set("maxInFlight", Napi::Number::New(env, s.max_in_flight_seen));
    o.Set("pacingNs", Napi::Number::New(env, double(s.pacing_ns)));
    return o;
  }

  // close(): stops submitting, waits for reads in flight, resolves when done.
  Napi::Value Close(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto d = Napi::Promise::Deferred::New(env);
    engine_->request_stop();
    if (cleaned_) {
      d.Resolve(env.Undefined());
    } else {
      closing_.push_back(d);
      tsfn_.Ref(env);  // keep the loop alive until the engine has drained
    }
    Deliver();
    return d.Promise();
  }

  Napi::Env env_;
  Napi::Reference<Napi::Float64Array> extents_ref_;  // the extents the engine reads in place, if so
  Napi::Reference<Napi::Float64Array> runs_ref_;     // the device runs it reads in place, if any
  std::unique_ptr<io::ReadEngine> engine_;
  Napi::Reference<Napi::ArrayBuffer> slab_;
  Tsfn tsfn_;
  std::optional<Napi::Promise::Deferred> pending_;
  std::vector<Napi::Promise::Deferred> closing_;
  bool cleaned_ = false;
  bool hook_installed_ = false;
};

void call_js(Napi::Env env, Napi::Function, Reader* reader, void*) {
  if (env == nullptr || reader == nullptr) return;  // environment shutting down
  try {
    reader->OnSignal();
  } catch (const Napi::Error& e) {
    // A read that ends while the process exits signals after JS can no
    // longer run: settling its promise fails, and so would throwing the
    // error into JS. Where JS runs, the error goes there; otherwise there is
    // no one left to tell (an exception escaping here would abort).
    try {
      e.ThrowAsJavaScriptException();
    } catch (...) {
    }
  }
}

}  // namespace

void init_reader(Napi::Env env, Napi::Object exports) { exports.Set("Reader", Reader::Init(env)); }

}  // namespace lowtide::napi
