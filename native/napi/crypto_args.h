// Arguments of the encryption bindings: a 32-byte key, a string of
// associated data (the object's name), both copied on the JS thread.
#pragma once

#include <napi.h>

#include <string>

#include "crypto/aead.h"

namespace lowtide::napi {

crypto::Key key_arg(Napi::Env env, const Napi::Value& v, const char* fn);
std::string aad_arg(Napi::Env env, const Napi::Value& v, const char* fn);

}  // namespace lowtide::napi
