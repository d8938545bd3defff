// Guest disks of virtual disk images (qcow2 and its backing chain).
//
//   openGuest(path, format: 'raw' | 'qcow2' | 'auto'): Promise<GuestHandle>
//   GuestHandle: info(), map(offset, length), read(offset, length),
//                decompress(layer, host, bytes), bitmaps(), bitmapExtents(name), close()
//
// map() resolves a guest range through the chain into segments, flattened
// into a Float64Array of [guest, length, kind, layer, host, csize, inner]
// (kind: 0 unallocated, 1 zero, 2 data, 3 compressed); read() returns guest
// bytes. Files are opened read-only and read with pread. decompress() turns the
// bytes of one compressed cluster of a layer, read elsewhere (by a read engine,
// with the layer's data), into the cluster.
#include <algorithm>
#include <cstring>
#include <memory>

#include "napi/async.h"
#include "napi/binding.h"
#include "qcow2/open.h"

namespace lowtide::napi {
namespace {

using Disk = std::shared_ptr<qcow2::OpenedDisk>;

Napi::Number num(Napi::Env env, uint64_t v) { return Napi::Number::New(env, static_cast<double>(v)); }

uint64_t u64_arg(const Napi::CallbackInfo& info, size_t i, const char* what) {
  if (info.Length() <= i || !info[i].IsNumber()) throw_invalid(info.Env(), std::string(what) + " must be a number");
  double d = info[i].As<Napi::Number>().DoubleValue();
  if (!(d >= 0) || d > 9007199254740991.0 || d != static_cast<double>(static_cast<uint64_t>(d)))
    throw_invalid(info.Env(), std::string(what) + " must be a non-negative integer");
  return static_cast<uint64_t>(d);
}

class GuestHandle : public Napi::ObjectWrap<GuestHandle> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "GuestHandle",
                       {
                           InstanceMethod<&GuestHandle::Info>("info"),
                           InstanceMethod<&GuestHandle::Map>("map"),
                           InstanceMethod<&GuestHandle::Read>("read"),
                           InstanceMethod<&GuestHandle::Decompress>("decompress"),
                           InstanceMethod<&GuestHandle::Bitmaps>("bitmaps"),
                           InstanceMethod<&GuestHandle::BitmapExtents>("bitmapExtents"),
                           InstanceMethod<&GuestHandle::Close>("close"),
                       });
  }

  explicit GuestHandle(const Napi::CallbackInfo& info) : Napi::ObjectWrap<GuestHandle>(info) {
    if (info.Length() != 1 || !info[0].IsExternal()) throw_invalid(info.Env(), "GuestHandle is created by openGuest()");
    disk_ = *info[0].As<Napi::External<Disk>>().Data();
  }

 private:
  Disk disk(Napi::Env env) const {
    if (!disk_) throw to_js_error(env, io::IoError("CLOSED", "the virtual disk is closed"));
    return disk_;
  }

  Napi::Value Info(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Disk d = disk(env);
    Napi::Object o = Napi::Object::New(env);
    o.Set("format", Napi::String::New(env, d->qcow2 ? "qcow2" : "raw"));
    o.Set("probed", Napi::Boolean::New(env, d->probed));
    o.Set("size", num(env, d->chain->size()));
    Napi::Array layers = Napi::Array::New(env);
    uint32_t i = 0;
    for (const qcow2::Layer& l : d->chain->layers()) {
      Napi::Object lo = Napi::Object::New(env);
      lo.Set("path", Napi::String::New(env, l.path));
      lo.Set("format", Napi::String::New(env, l.format));
      lo.Set("size", num(env, l.size));
      lo.Set("fileSize", num(env, l.file->size()));
      if (l.image) {
        const qcow2::Header& h = l.image->header();
        lo.Set("version", Napi::Number::New(env, h.version));
        lo.Set("clusterSize", num(env, h.cluster_size));
        lo.Set("extendedL2", Napi::Boolean::New(env, h.extended_l2));
        lo.Set("compression", Napi::String::New(env, h.compression == qcow2::CompressionType::Zstd ? "zstd" : "deflate"));
        lo.Set("dirty", Napi::Boolean::New(env, h.dirty));
        lo.Set("backingFile", h.backing_file.empty() ? env.Null() : Napi::Value(Napi::String::New(env, h.backing_file)));
        lo.Set("backingFormat", h.backing_format.empty() ? env.Null() : Napi::Value(Napi::String::New(env, h.backing_format)));
        lo.Set("bitmapsExtension", Napi::Boolean::New(env, h.bitmaps_extension));
        lo.Set("snapshots", Napi::Number::New(env, h.nb_snapshots));
      }
      layers.Set(i++, lo);
    }
    o.Set("layers", layers);
    return o;
  }

  Napi::Value Map(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Disk d = disk(env);
    uint64_t offset = u64_arg(info, 0, "offset");
    uint64_t length = u64_arg(info, 1, "length");
    return run_async<std::vector<qcow2::Segment>>(
        env, "lowtide:guest-map", [d, offset, length](std::vector<qcow2::Segment>& out) { out = d->chain->map(offset, length); },
        [](Napi::Env env, std::vector<qcow2::Segment>& segs) -> Napi::Value {
          Napi::Float64Array a = Napi::Float64Array::New(env, segs.size() * 7);
          for (size_t i = 0; i < segs.size(); ++i) {
            const qcow2::Segment& s = segs[i];
            a[i * 7] = double(s.guest);
            a[i * 7 + 1] = double(s.length);
            a[i * 7 + 2] = double(static_cast<uint8_t>(s.kind));
            a[i * 7 + 3] = double(s.layer);
            a[i * 7 + 4] = double(s.host);
            a[i * 7 + 5] = double(s.csize);
            a[i * 7 + 6] = double(s.inner);
          }
          return a;
        });
  }

  Napi::Value Read(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Disk d = disk(env);
    uint64_t offset = u64_arg(info, 0, "offset");
    uint64_t length = u64_arg(info, 1, "length");
    if (length > (uint64_t(64) << 20)) throw_invalid(env, "length must be at most 64 MiB");
    return run_async<std::vector<uint8_t>>(
        env, "lowtide:guest-read",
        [d, offset, length](std::vector<uint8_t>& out) {
          out.resize(length);
          d->chain->read(offset, out.data(), out.size());
        },
        [](Napi::Env env, std::vector<uint8_t>& out) -> Napi::Value {
          return Napi::Buffer<uint8_t>::Copy(env, out.data(), out.size());
        });
  }

  // decompress(layer, host, bytes: Uint8Array): Promise<Buffer> — one cluster of `layer`'s size.
  Napi::Value Decompress(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Disk d = disk(env);
    const uint64_t layer = u64_arg(info, 0, "layer");
    const uint64_t host = u64_arg(info, 1, "host");
    if (info.Length() < 3 || !info[2].IsTypedArray() || info[2].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array)
      throw_invalid(env, "bytes must be a Uint8Array");
    const auto& layers = d->chain->layers();
    if (layer >= layers.size() || !layers[layer].image) throw_invalid(env, "layer must be a qcow2 image of the chain");
    const qcow2::Header& h = layers[layer].image->header();
    Napi::Uint8Array bytes = info[2].As<Napi::Uint8Array>();
    std::vector<uint8_t> src(bytes.Data(), bytes.Data() + bytes.ByteLength());
    return run_async<std::vector<uint8_t>>(
        env, "lowtide:guest-decompress",
        [src = std::move(src), type = h.compression, cs = uint64_t(h.cluster_size),
         where = layers[layer].path + " compressed cluster at offset " + std::to_string(host)](std::vector<uint8_t>& out) {
          out.resize(cs);
          qcow2::decompress_cluster(type, src.data(), src.size(), out.data(), out.size(), where);
        },
        [](Napi::Env env, std::vector<uint8_t>& out) -> Napi::Value {
          return Napi::Buffer<uint8_t>::Copy(env, out.data(), out.size());
        });
  }

  Napi::Value Bitmaps(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Disk d = disk(env);
    return run_async<std::vector<qcow2::Bitmap>>(
        env, "lowtide:guest-bitmaps", [d](std::vector<qcow2::Bitmap>& out) { out = d->chain->bitmaps(); },
        [](Napi::Env env, std::vector<qcow2::Bitmap>& list) -> Napi::Value {
          Napi::Array a = Napi::Array::New(env, list.size());
          for (size_t i = 0; i < list.size(); ++i) {
            Napi::Object o = Napi::Object::New(env);
            o.Set("name", Napi::String::New(env, list[i].name));
            o.Set("granularity", num(env, uint64_t(1) << std::min<uint8_t>(list[i].granularity_bits, 63)));
            o.Set("inUse", Napi::Boolean::New(env, list[i].in_use()));
            o.Set("enabled", Napi::Boolean::New(env, list[i].auto_enabled()));
            a.Set(uint32_t(i), o);
          }
          return a;
        });
  }

  Napi::Value BitmapExtents(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Disk d = disk(env);
    if (info.Length() < 1 || !info[0].IsString()) throw_invalid(env, "bitmapExtents(name) expects a string");
    return run_async<std::vector<std::pair<uint64_t, uint64_t>>>(
        env, "lowtide:guest-bitmap",
        [d, name = std::string(info[0].As<Napi::String>())](auto& out) { out = d->chain->bitmap_extents(name); },
        [](Napi::Env env, std::vector<std::pair<uint64_t, uint64_t>>& ext) -> Napi::Value {
          Napi::Float64Array a = Napi::Float64Array::New(env, ext.size() * 2);
          for (size_t i = 0; i < ext.size(); ++i) {
            a[i * 2] = double(ext[i].first);
            a[i * 2 + 1] = double(ext[i].second);
          }
          return a;
        });
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    disk_.reset();  // running tasks keep their own reference until they finish
    return info.Env().Undefined();
  }

  Disk disk_;
};

// openGuest(path: string, format: 'raw' | 'qcow2' | 'auto'): Promise<GuestHandle>
Napi::Value OpenGuest(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsString() || !info[1].IsString())
    throw_invalid(env, "openGuest(path, format) expects two strings");
  std::string f = info[1].As<Napi::String>();
  qcow2::Format format;
  if (f == "raw") format = qcow2::Format::Raw;
  else if (f == "qcow2") format = qcow2::Format::Qcow2;
  else if (f == "auto") format = qcow2::Format::Auto;
  else throw_invalid(env, "format must be 'raw', 'qcow2' or 'auto'");
  auto* ctor = static_cast<Napi::FunctionReference*>(info.Data());
  return run_async<Disk>(
      env, "lowtide:open-guest",
      [path = std::string(info[0].As<Napi::String>()), format](Disk& out) {
        out = std::make_shared<qcow2::OpenedDisk>(qcow2::open_disk(path, format));
      },
      [ctor](Napi::Env env, Disk& d) -> Napi::Value {
        auto holder = std::make_unique<Disk>(d);
        Napi::Value ext = Napi::External<Disk>::New(env, holder.get());
        return ctor->New({ext});
      });
}

}  // namespace

void init_guest(Napi::Env env, Napi::Object exports) {
  Napi::Function ctor = GuestHandle::Init(env);
  auto* ref = new Napi::FunctionReference(Napi::Persistent(ctor));
  env.AddCleanupHook([ref] { delete ref; });
  exports.Set("openGuest", Napi::Function::New(env, OpenGuest, "openGuest", ref));
}

}  // namespace lowtide::napi
