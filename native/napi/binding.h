// Shared pieces of the Node-API layer.
#pragma once

#include <napi.h>

#include <memory>

#include "io/io_error.h"
#include "napi/work_pool.h"

namespace lowtide::napi {

// Per-environment data: constructors of the wrapped classes, the worker pool.
struct AddonData {
  explicit AddonData(Napi::Env env) : pool(env) {}
  Napi::FunctionReference source_ctor;
  Napi::FunctionReference reader_ctor;
  WorkPool pool;
};

AddonData& addon_data(Napi::Env env);

// A JS Error carrying the IoError's code, errno and offset.
Napi::Error to_js_error(Napi::Env env, const io::IoError& e);
// Throws a JS TypeError-like error with code INVALID_ARGUMENT.
[[noreturn]] void throw_invalid(Napi::Env env, const std::string& message);

// A JS typed array's bytes for work off the JS thread (napi/async.h): the
// reference keeps the array (and so its memory) alive until the work is
// destroyed, on the JS thread. Off it, only `data` and `size` are used.
struct HeldView {
  explicit HeldView(Napi::TypedArray view)
      : ref(Napi::Persistent(view.As<Napi::Object>())),
        data(static_cast<unsigned char*>(view.ArrayBuffer().Data()) + view.ByteOffset()),
        size(view.ByteLength()) {}
  Napi::ObjectReference ref;
  unsigned char* data;
  size_t size;
};

// Module parts; each adds its exports.
void init_source(Napi::Env env, Napi::Object exports);
void init_reader(Napi::Env env, Napi::Object exports);
void init_util(Napi::Env env, Napi::Object exports);
void init_hash(Napi::Env env, Napi::Object exports);
void init_volume(Napi::Env env, Napi::Object exports);
void init_compress(Napi::Env env, Napi::Object exports);
void init_chunk_file(Napi::Env env, Napi::Object exports);
void init_crypto(Napi::Env env, Napi::Object exports);
void init_fiemap(Napi::Env env, Napi::Object exports);
void init_guest(Napi::Env env, Napi::Object exports);

}  // namespace lowtide::napi
