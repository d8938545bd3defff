// FAT and partition-table results as JS values, for napi/volume.cc. On the JS
// thread only. Every byte offset is an offset on the source (file or device).
#pragma once

#include <napi.h>

#include <cstdint>
#include <vector>

#include "fat/deletion.h"
#include "fat/dir.h"
#include "fat/volume.h"
#include "part/partition.h"

namespace lowtide::napi {

inline Napi::Number num(Napi::Env env, uint64_t v) { return Napi::Number::New(env, static_cast<double>(v)); }

Napi::Object table_to_js(Napi::Env env, const part::PartitionTable& t);
Napi::Object info_to_js(Napi::Env env, const fat::VolumeInfo& vi);
// `path` (when given) stands for e.path.
Napi::Object entry_to_js(Napi::Env env, const fat::DirEntry& e, const std::string* path = nullptr);
Napi::Array entries_to_js(Napi::Env env, const std::vector<fat::DirEntry>& v);
Napi::Array extents_to_js(Napi::Env env, const std::vector<fat::Extent>& v);
// Hands the map's words to JS without a copy (moved out of `m`).
Napi::Object allocation_map_to_js(Napi::Env env, const fat::FatVolume& vol, fat::AllocationMap& m);
// Hands the sectors to write to JS without a copy (moved out of `p`).
Napi::Object deletion_plan_to_js(Napi::Env env, const fat::FatVolume& vol, fat::DeletionPlan& p);

}  // namespace lowtide::napi
