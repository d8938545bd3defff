#include "napi/binding.h"

namespace lowtide::napi {

AddonData& addon_data(Napi::Env env) { return *env.GetInstanceData<AddonData>(); }

Napi::Error to_js_error(Napi::Env env, const io::IoError& e) {
  Napi::Error err = Napi::Error::New(env, e.what());
  Napi::Object o = err.Value();
  o.Set("code", Napi::String::New(env, e.code()));
  if (e.err() != 0) o.Set("errno", Napi::Number::New(env, e.err()));
  if (e.offset() >= 0) o.Set("offset", Napi::Number::New(env, double(e.offset())));
  return err;
}

void throw_invalid(Napi::Env env, const std::string& message) { throw to_js_error(env, io::IoError("INVALID_ARGUMENT", message)); }

}  // namespace lowtide::napi
