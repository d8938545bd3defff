// mapFile(): a file's FIEMAP extents and the block device under it, off the JS thread.
#include "host/fiemap.h"
#include "napi/async.h"
#include "napi/binding.h"

namespace lowtide::napi {
namespace {

double offset_arg(const Napi::CallbackInfo& info, size_t i, const char* what) {
  Napi::Env env = info.Env();
  if (info.Length() <= i || !info[i].IsNumber()) throw_invalid(env, std::string(what) + " must be a number");
  double d = info[i].As<Napi::Number>().DoubleValue();
  if (!(d >= 0 && d <= 9007199254740991.0) || d != double(uint64_t(d)))
    throw_invalid(env, std::string(what) + " must be a non-negative integer");
  return d;
}

// mapFile(path, start, length, sync): Promise<{ size, fsMagic, realtime,
// devMajor, devMinor, device, deviceReason, fiemap, fiemapReason,
// fiemapErrno, extents: Float64Array [logical, physical, length, flags]... }>
Napi::Value MapFile(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) throw_invalid(env, "mapFile(path, start, length, sync) expects a path");
  std::string path = info[0].As<Napi::String>();
  uint64_t start = uint64_t(offset_arg(info, 1, "start"));
  uint64_t length = uint64_t(offset_arg(info, 2, "length"));
  bool sync = info.Length() > 3 && info[3].ToBoolean();
  return run_async<host::FileMapping>(
      env, "lowtide:map-file", [path, start, length, sync](host::FileMapping& m) { m = host::map_file(path, start, length, sync); },
      [](Napi::Env env, host::FileMapping& m) -> Napi::Value {
        Napi::Object o = Napi::Object::New(env);
        o.Set("size", Napi::Number::New(env, double(m.size)));
        o.Set("fsMagic", Napi::Number::New(env, double(m.fs_magic)));
        o.Set("realtime", Napi::Boolean::New(env, m.realtime));
        o.Set("devMajor", Napi::Number::New(env, m.dev_major));
        o.Set("devMinor", Napi::Number::New(env, m.dev_minor));
        o.Set("device", m.device.empty() ? env.Null() : Napi::String::New(env, m.device));
        o.Set("deviceReason", Napi::String::New(env, m.device_reason));
        o.Set("fiemap", Napi::Boolean::New(env, m.fiemap_ok));
        o.Set("fiemapReason", Napi::String::New(env, m.fiemap_reason));
        o.Set("fiemapErrno", Napi::Number::New(env, m.fiemap_errno));
        Napi::Float64Array a = Napi::Float64Array::New(env, m.extents.size() * 4);
        for (size_t i = 0; i < m.extents.size(); ++i) {
          const host::FileExtent& x = m.extents[i];
          a[i * 4 + 0] = double(x.logical);
          a[i * 4 + 1] = double(x.physical);
          a[i * 4 + 2] = double(x.length);
          a[i * 4 + 3] = double(x.flags);
        }
        o.Set("extents", a);
        return o;
      });
}

}  // namespace

void init_fiemap(Napi::Env env, Napi::Object exports) { exports.Set("mapFile", Napi::Function::New(env, MapFile, "mapFile")); }

}  // namespace lowtide::napi
