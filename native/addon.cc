// Registers the binding; nothing else.
#include <napi.h>

#include "napi/binding.h"

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  env.SetInstanceData(new lowtide::napi::AddonData(env));
  lowtide::napi::init_source(env, exports);
  lowtide::napi::init_reader(env, exports);
  lowtide::napi::init_util(env, exports);
  lowtide::napi::init_hash(env, exports);
  lowtide::napi::init_volume(env, exports);
  lowtide::napi::init_compress(env, exports);
  lowtide::napi::init_chunk_file(env, exports);
  lowtide::napi::init_crypto(env, exports);
  lowtide::napi::init_fiemap(env, exports);
  lowtide::napi::init_guest(env, exports);
  return exports;
}

NODE_API_MODULE(lowtide, Init)
