#pragma once

#include <napi.h>

#include <memory>

#include "io/block_source.h"

namespace lowtide::napi {

class SourceHandle : public Napi::ObjectWrap<SourceHandle> {
 public:
  static Napi::Object Init(Napi::Env env);
  explicit SourceHandle(const Napi::CallbackInfo& info);

  // Null once closed.
  std::shared_ptr<io::BlockSource> source() const { return source_; }

 private:
  Napi::Value Info(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);
  Napi::Value Probe(const Napi::CallbackInfo& info);

  std::shared_ptr<io::BlockSource> source_;
};

}  // namespace lowtide::napi
