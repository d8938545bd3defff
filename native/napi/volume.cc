// Node-API binding of the partition-table and FAT parsers.
//
//   readPartitions(path): Promise<PartitionTable>
//   openVolume(path, offset, size): Promise<VolumeHandle>   (size 0: to the end)
//   VolumeHandle: info(), allocationMap(), list(path), stat(path), walk(),
//                 catalog(partition, excluded, frameBytes),
//                 chain(cluster), fileExtents(path), readFile(path),
//                 compareFats(), planDeletion(paths), close()
//
// Every byte offset handed to JS is an offset on the source (file or device).
// Sources are opened read-only (fat/source_reader.h) and read with pread;
// nothing is written.
#include <algorithm>
#include <bit>
#include <memory>
#include <mutex>
#include <unordered_set>

#include "fat/byte_reader.h"
#include "fat/catalog.h"
#include "fat/deletion.h"
#include "fat/source_reader.h"
#include "fat/volume.h"
#include "napi/async.h"
#include "napi/binding.h"
#include "part/partition.h"

namespace lowtide::napi {
namespace {

static_assert(std::endian::native == std::endian::little, "the allocation bitmap is handed out as little-endian words");

// One opened FAT volume. Operations on it are serialised by `mu` (the FAT
// cache inside is not thread-safe); each piece of async work keeps the state
// alive.
struct VolumeState {
  std::mutex mu;
  std::unique_ptr<fat::SourceReader> disk;
  std::unique_ptr<fat::WindowReader> window;
  std::unique_ptr<fat::FatVolume> vol;
};

Napi::Number num(Napi::Env env, uint64_t v) { return Napi::Number::New(env, static_cast<double>(v)); }
Napi::String str(Napi::Env env, const std::string& s) { return Napi::String::New(env, s); }

Napi::Array strings(Napi::Env env, const std::vector<std::string>& v) {
  Napi::Array a = Napi::Array::New(env, v.size());
  for (size_t i = 0; i < v.size(); i++) a.Set(static_cast<uint32_t>(i), str(env, v[i]));
  return a;
}

std::string string_arg(const Napi::CallbackInfo& info, size_t i, const char* what) {
  if (info.Length() <= i || !info[i].IsString()) throw_invalid(info.Env(), std::string(what) + " must be a string");
  return info[i].As<Napi::String>();
}

uint64_t offset_arg(const Napi::CallbackInfo& info, size_t i, const char* what) {
  if (info.Length() <= i || !info[i].IsNumber()) throw_invalid(info.Env(), std::string(what) + " must be a number");
  double d = info[i].As<Napi::Number>().DoubleValue();
  if (!(d >= 0) || d > 9007199254740991.0 || d != static_cast<double>(static_cast<uint64_t>(d)))
    throw_invalid(info.Env(), std::string(what) + " must be a non-negative integer, got " + std::to_string(d));
  return static_cast<uint64_t>(d);
}

Napi::Object partition_to_js(Napi::Env env, const part::Partition& p) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("index", num(env, p.index));
  o.Set("start", num(env, p.start));
  o.Set("size", num(env, p.size));
  o.Set("mbrType", num(env, p.mbr_type));
  o.Set("bootable", Napi::Boolean::New(env, p.bootable));
  o.Set("extended", Napi::Boolean::New(env, p.extended));
  o.Set("logical", Napi::Boolean::New(env, p.logical));
  o.Set("typeGuid", str(env, p.type_guid));
  o.Set("uniqueGuid", str(env, p.unique_guid));
  o.Set("attributes", Napi::BigInt::New(env, p.attributes));
  o.Set("name", str(env, p.name));
  o.Set("typeName", str(env, p.type_name));
  o.Set("fs", str(env, p.fs));
  o.Set("truncated", Napi::Boolean::New(env, p.truncated));
  return o;
}

Napi::Object table_to_js(Napi::Env env, const part::PartitionTable& t) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("kind", str(env, part::kind_name(t.kind)));
  o.Set("sectorSize", num(env, t.sector_size));
  o.Set("diskSize", num(env, t.disk_size));
  o.Set("diskGuid", str(env, t.disk_guid));
  o.Set("mbrSignature", num(env, t.mbr_signature));
  o.Set("gptBackupUsed", Napi::Boolean::New(env, t.gpt_backup_used));
  Napi::Array parts = Napi::Array::New(env, t.partitions.size());
  for (size_t i = 0; i < t.partitions.size(); i++) parts.Set(static_cast<uint32_t>(i), partition_to_js(env, t.partitions[i]));
  o.Set("partitions", parts);
  o.Set("warnings", strings(env, t.warnings));
  return o;
}

Napi::Object entry_to_js(Napi::Env env, const fat::DirEntry& e) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("path", str(env, e.path));
  o.Set("name", str(env, e.name));
  o.Set("shortName", str(env, e.short_name));
  o.Set("attributes", num(env, e.attr));
  o.Set("isDirectory", Napi::Boolean::New(env, e.is_dir()));
  o.Set("size", num(env, e.is_dir() ? 0 : e.size));
  o.Set("firstCluster", num(env, e.first_cluster));
  o.Set("createDate", num(env, e.create_date));
  o.Set("createTime", num(env, e.create_time));
  o.Set("createTenths", num(env, e.create_tenths));
  o.Set("accessDate", num(env, e.access_date));
  o.Set("modifyDate", num(env, e.modify_date));
  o.Set("modifyTime", num(env, e.modify_time));
  o.Set("entryOffset", num(env, e.offset));
  o.Set("lfnOffset", num(env, e.lfn_offset));
  o.Set("lfnSlots", num(env, e.lfn_slots));
  return o;
}

Napi::Array entries_to_js(Napi::Env env, const std::vector<fat::DirEntry>& v) {
  Napi::Array a = Napi::Array::New(env, v.size());
  for (size_t i = 0; i < v.size(); i++) a.Set(static_cast<uint32_t>(i), entry_to_js(env, v[i]));
  return a;
}

Napi::Array extents_to_js(Napi::Env env, const std::vector<fat::Extent>& v) {
  Napi::Array a = Napi::Array::New(env, v.size());
  for (size_t i = 0; i < v.size(); i++) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("offset", num(env, v[i].offset));
    o.Set("length", num(env, v[i].length));
    a.Set(static_cast<uint32_t>(i), o);
  }
  return a;
}

Napi::Object info_to_js(Napi::Env env, const fat::VolumeInfo& vi) {
  const fat::FatGeometry& g = vi.geo;
  Napi::Object o = Napi::Object::New(env);
  o.Set("type", str(env, fat::fat_type_name(g.type)));
  o.Set("partitionOffset", num(env, vi.base));
  o.Set("volumeSize", num(env, vi.size));
  o.Set("bytesPerSector", num(env, g.bytes_per_sector));
  o.Set("sectorsPerCluster", num(env, g.sectors_per_cluster));
  o.Set("clusterSize", num(env, g.cluster_size));
  o.Set("reservedSectors", num(env, g.reserved_sectors));
  o.Set("fatCount", num(env, g.num_fats));
  o.Set("fatSectors", num(env, g.fat_sectors));
  o.Set("rootEntries", num(env, g.root_entries));
  o.Set("totalSectors", num(env, g.total_sectors));
  o.Set("clusterCount", num(env, g.cluster_count));
  o.Set("fatOffset", num(env, vi.base + g.fat_offset));
  o.Set("fatBytes", num(env, g.fat_bytes));
  o.Set("rootDirOffset", num(env, vi.base + g.root_dir_offset));
  o.Set("rootDirBytes", num(env, g.root_dir_bytes));
  o.Set("dataOffset", num(env, vi.base + g.data_offset));
  o.Set("rootCluster", num(env, g.root_cluster));
  o.Set("fsInfoSector", num(env, g.fsinfo_sector));
  o.Set("backupBootSector", num(env, g.backup_boot_sector));
  o.Set("activeFat", num(env, g.active_fat));
  o.Set("mirroring", Napi::Boolean::New(env, g.mirroring));
  o.Set("media", num(env, g.media));
  o.Set("hiddenSectors", num(env, g.hidden_sectors));
  o.Set("volumeId", num(env, g.volume_id));
  o.Set("oemName", str(env, g.oem_name));
  o.Set("bpbLabel", str(env, g.bpb_label));
  o.Set("fsTypeLabel", str(env, g.fs_type_label));
  o.Set("label", vi.label ? Napi::Value(str(env, *vi.label)) : env.Null());
  o.Set("dirty", Napi::Boolean::New(env, vi.dirty));
  o.Set("bootDirty", Napi::Boolean::New(env, g.boot_dirty));
  o.Set("fatDirty", Napi::Boolean::New(env, vi.fat_dirty));
  o.Set("fatHardError", Napi::Boolean::New(env, vi.fat_hard_error));
  Napi::Object fi = Napi::Object::New(env);
  fi.Set("present", Napi::Boolean::New(env, vi.fsinfo.present));
  fi.Set("valid", Napi::Boolean::New(env, vi.fsinfo.valid));
  fi.Set("freeCount", vi.fsinfo.free_count == 0xFFFFFFFF ? env.Null() : Napi::Value(num(env, vi.fsinfo.free_count)));
  fi.Set("nextFree", vi.fsinfo.next_free == 0xFFFFFFFF ? env.Null() : Napi::Value(num(env, vi.fsinfo.next_free)));
  fi.Set("offset", num(env, vi.fsinfo.offset));
  o.Set("fsInfo", fi);
  o.Set("warnings", strings(env, vi.warnings));
  return o;
}

class VolumeHandle : public Napi::ObjectWrap<VolumeHandle> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "VolumeHandle",
                       {
                           InstanceMethod<&VolumeHandle::Info>("info"),
                           InstanceMethod<&VolumeHandle::AllocationMapJs>("allocationMap"),
                           InstanceMethod<&VolumeHandle::List>("list"),
                           InstanceMethod<&VolumeHandle::Stat>("stat"),
                           InstanceMethod<&VolumeHandle::Walk>("walk"),
                           InstanceMethod<&VolumeHandle::Catalog>("catalog"),
                           InstanceMethod<&VolumeHandle::Chain>("chain"),
                           InstanceMethod<&VolumeHandle::FileExtents>("fileExtents"),
                           InstanceMethod<&VolumeHandle::ReadFile>("readFile"),
                           InstanceMethod<&VolumeHandle::CompareFats>("compareFats"),
                           InstanceMethod<&VolumeHandle::PlanDeletion>("planDeletion"),
                           InstanceMethod<&VolumeHandle::Close>("close"),
                       });
  }

  explicit VolumeHandle(const Napi::CallbackInfo& info) : Napi::ObjectWrap<VolumeHandle>(info) {
    if (info.Length() != 1 || !info[0].IsExternal()) throw_invalid(info.Env(), "VolumeHandle is created by openVolume()");
    state_ = *info[0].As<Napi::External<std::shared_ptr<VolumeState>>>().Data();
  }

 private:
  std::shared_ptr<VolumeState> live(Napi::Env env) {
    if (!state_) throw to_js_error(env, io::IoError("CLOSED", "the volume is closed"));
    return state_;
  }

  Napi::Value Info(const Napi::CallbackInfo& info) { return info_to_js(info.Env(), live(info.Env())->vol->info()); }

  Napi::Value AllocationMapJs(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto st = live(env);
    return run_async<fat::AllocationMap>(
        env, "lowtide:fat-map",
        [st](fat::AllocationMap& out) {
          std::lock_guard<std::mutex> lock(st->mu);
          out = st->vol->allocation_map();
        },
        [st](Napi::Env env, fat::AllocationMap& out) -> Napi::Value { return map_to_js(env, *st->vol, out); });
  }

  // Hands the map's words to JS (moved out of `m`).
  static Napi::Object map_to_js(Napi::Env env, const fat::FatVolume& vol, fat::AllocationMap& m) {
    const fat::FatGeometry& g = vol.geo();
    auto* words = new std::vector<uint64_t>(std::move(m.words));
    size_t bytes = (static_cast<size_t>(m.cluster_count) + 7) / 8;
    Napi::Buffer<uint8_t> buf = Napi::Buffer<uint8_t>::NewOrCopy(
        env, reinterpret_cast<uint8_t*>(words->data()), bytes,
        [](Napi::Env, uint8_t*, std::vector<uint64_t>* w) { delete w; }, words);
    Napi::Object o = Napi::Object::New(env);
    o.Set("bitmap", buf);
    o.Set("firstCluster", num(env, 2));
    o.Set("clusterCount", num(env, m.cluster_count));
    o.Set("clusterSize", num(env, g.cluster_size));
    o.Set("dataOffset", num(env, vol.info().base + g.data_offset));
    o.Set("used", num(env, m.used));
    o.Set("free", num(env, m.free));
    o.Set("bad", num(env, m.bad));
    return o;
  }

  // planDeletion(paths: string[]): Promise<DeletionPlan>
  Napi::Value PlanDeletion(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsArray()) throw_invalid(env, "paths must be an array of strings");
    Napi::Array arr = info[0].As<Napi::Array>();
    std::vector<std::string> paths;
    paths.reserve(arr.Length());
    for (uint32_t i = 0; i < arr.Length(); i++) {
      Napi::Value v = arr.Get(i);
      if (!v.IsString()) throw_invalid(env, "paths[" + std::to_string(i) + "] must be a string");
      paths.push_back(v.As<Napi::String>());
    }
    auto st = live(env);
    return run_async<fat::DeletionPlan>(
        env, "lowtide:fat-plan-deletion",
        [st, paths](fat::DeletionPlan& out) {
          std::lock_guard<std::mutex> lock(st->mu);
          out = fat::plan_deletion(*st->vol, *st->window, paths);
        },
        [st](Napi::Env env, fat::DeletionPlan& p) -> Napi::Value {
          Napi::Object o = Napi::Object::New(env);
          o.Set("sectorSize", num(env, p.sector_size));
          Napi::Float64Array offs = Napi::Float64Array::New(env, p.write_offsets.size());
          for (size_t i = 0; i < p.write_offsets.size(); i++) offs[i] = static_cast<double>(p.write_offsets[i]);
          o.Set("writeOffsets", offs);
          auto* data = new std::vector<uint8_t>(std::move(p.write_data));
          o.Set("writeData", Napi::Buffer<uint8_t>::NewOrCopy(env, data->data(), data->size(),
                                                              [](Napi::Env, uint8_t*, std::vector<uint8_t>* d) { delete d; },
                                                              data));
          o.Set("freedClusters", num(env, p.freed_clusters));
          o.Set("freedBytes", num(env, p.freed_bytes));
          o.Set("lowestFreedCluster", num(env, p.lowest_freed));
          o.Set("freedRuns", extents_to_js(env, p.freed_runs));
          Napi::Array ex = Napi::Array::New(env, p.excluded.size());
          for (size_t i = 0; i < p.excluded.size(); i++) {
            const fat::ExcludedEntry& e = p.excluded[i];
            Napi::Object x = Napi::Object::New(env);
            x.Set("path", str(env, e.path));
            x.Set("size", num(env, e.size));
            x.Set("isDirectory", Napi::Boolean::New(env, e.is_dir));
            x.Set("top", Napi::Boolean::New(env, e.top));
            ex.Set(static_cast<uint32_t>(i), x);
          }
          o.Set("excluded", ex);
          o.Set("bytesExcluded", num(env, p.bytes_excluded));
          o.Set("entriesMarked", num(env, p.entries_marked));
          o.Set("fsinfo", str(env, fat::fsinfo_update_name(p.fsinfo)));
          auto count = [&](uint32_t v) { return v == 0xFFFFFFFF ? env.Null() : Napi::Value(num(env, v)); };
          o.Set("fsinfoFreeBefore", count(p.fsinfo_free_before));
          o.Set("fsinfoFreeAfter", count(p.fsinfo_free_after));
          o.Set("fsinfoNextFreeBefore", count(p.fsinfo_next_free_before));
          o.Set("fsinfoNextFreeAfter", count(p.fsinfo_next_free_after));
          Napi::Array copies = Napi::Array::New(env, p.fat_copies.size());
          for (size_t i = 0; i < p.fat_copies.size(); i++) copies.Set(static_cast<uint32_t>(i), num(env, p.fat_copies[i]));
          o.Set("fatCopies", copies);
          o.Set("allocationMap", map_to_js(env, *st->vol, p.map_after));
          return o;
        });
  }

  Napi::Value List(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::string path = string_arg(info, 0, "path");
    auto st = live(env);
    return run_async<std::vector<fat::DirEntry>>(
        env, "lowtide:fat-list",
        [st, path](std::vector<fat::DirEntry>& out) {
          std::lock_guard<std::mutex> lock(st->mu);
          out = st->vol->list(path);
        },
        [](Napi::Env env, std::vector<fat::DirEntry>& out) -> Napi::Value { return entries_to_js(env, out); });
  }

  Napi::Value Stat(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::string path = string_arg(info, 0, "path");
    auto st = live(env);
    return run_async<fat::DirEntry>(
        env, "lowtide:fat-stat",
        [st, path](fat::DirEntry& out) {
          std::lock_guard<std::mutex> lock(st->mu);
          out = st->vol->stat(path);
        },
        [](Napi::Env env, fat::DirEntry& out) -> Napi::Value { return entry_to_js(env, out); });
  }

  Napi::Value Walk(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    // walk(checkFiles = true, withExtents = false): checkFiles false walks only
    // directory chains (a listing); withExtents adds each entry's data extents.
    bool check_files = true;
    bool with_extents = false;
    if (info.Length() > 0 && !info[0].IsUndefined()) {
      if (!info[0].IsBoolean()) throw_invalid(env, "checkFiles must be a boolean");
      check_files = info[0].As<Napi::Boolean>().Value();
    }
    if (info.Length() > 1 && !info[1].IsUndefined()) {
      if (!info[1].IsBoolean()) throw_invalid(env, "withExtents must be a boolean");
      with_extents = info[1].As<Napi::Boolean>().Value();
    }
    if (with_extents && !check_files) throw_invalid(env, "withExtents needs checkFiles");
    auto st = live(env);
    struct Out {
      std::vector<fat::DirEntry> entries;
      std::vector<std::vector<fat::Extent>> extents;
      fat::WalkStats stats;
    };
    return run_async<Out>(
        env, "lowtide:fat-walk",
        [st, check_files, with_extents](Out& out) {
          std::lock_guard<std::mutex> lock(st->mu);
          out.entries = st->vol->walk(&out.stats, check_files, with_extents ? &out.extents : nullptr);
        },
        [with_extents](Napi::Env env, Out& out) -> Napi::Value {
          Napi::Object o = Napi::Object::New(env);
          o.Set("entries", entries_to_js(env, out.entries));
          if (with_extents) {
            Napi::Array a = Napi::Array::New(env, out.extents.size());
            for (size_t i = 0; i < out.extents.size(); i++) a.Set(static_cast<uint32_t>(i), extents_to_js(env, out.extents[i]));
            o.Set("extents", a);
          }
          Napi::Object s = Napi::Object::New(env);
          s.Set("files", num(env, out.stats.files));
          s.Set("directories", num(env, out.stats.directories));
          s.Set("clustersOwned", num(env, out.stats.clusters_owned));
          s.Set("orphanLongNames", num(env, out.stats.orphan_lfn));
          s.Set("deletedEntries", num(env, out.stats.deleted_entries));
          o.Set("stats", s);
          return o;
        });
  }

  // catalog(partition, excluded: string[], frameBytes): the backup catalog's
  // JSON lines of every entry (fat/catalog.h), walked and formatted off the JS
  // thread; resolves to [{ text: Buffer, entries }] frames.
  Napi::Value Catalog(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 3 || !info[0].IsNumber() || !info[1].IsArray() || !info[2].IsNumber())
      throw_invalid(env, "catalog(partition, excluded, frameBytes)");
    double partition = info[0].As<Napi::Number>().DoubleValue();
    double frame_bytes = info[2].As<Napi::Number>().DoubleValue();
    if (!(partition >= 0 && partition <= 0xFFFFFFFF) || partition != static_cast<double>(static_cast<uint32_t>(partition)))
      throw_invalid(env, "partition must be an integer from 0 to 2^32-1");
    if (!(frame_bytes >= 1 && frame_bytes <= double(1 << 30))) throw_invalid(env, "frameBytes must be from 1 to 2^30");
    std::unordered_set<std::string> excluded;
    Napi::Array ex = info[1].As<Napi::Array>();
    for (uint32_t i = 0; i < ex.Length(); i++) {
      Napi::Value v = ex.Get(i);
      if (!v.IsString()) throw_invalid(env, "excluded must be an array of paths");
      excluded.insert(v.As<Napi::String>().Utf8Value());
    }
    auto st = live(env);
    uint32_t part = static_cast<uint32_t>(partition);
    size_t frame = static_cast<size_t>(frame_bytes);
    return run_async<std::vector<fat::CatalogFrame>>(
        env, "lowtide:fat-catalog",
        [st, part, frame, excluded = std::move(excluded)](std::vector<fat::CatalogFrame>& out) {
          std::vector<std::vector<fat::Extent>> extents;
          fat::WalkStats stats;
          std::vector<fat::DirEntry> entries;
          {
            std::lock_guard<std::mutex> lock(st->mu);
            entries = st->vol->walk(&stats, true, &extents);
          }
          out = fat::catalog_frames(entries, extents, part, excluded, frame);
        },
        [](Napi::Env env, std::vector<fat::CatalogFrame>& out) -> Napi::Value {
          Napi::Array a = Napi::Array::New(env, out.size());
          for (size_t i = 0; i < out.size(); i++) {
            const std::string& text = out[i].text;
            Napi::Object o = Napi::Object::New(env);
            o.Set("text", Napi::Buffer<char>::Copy(env, text.data(), text.size()));
            o.Set("entries", num(env, out[i].entries));
            a.Set(static_cast<uint32_t>(i), o);
          }
          return a;
        });
  }

  Napi::Value Chain(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    uint64_t c = offset_arg(info, 0, "cluster");
    if (c > 0xFFFFFFFFull) throw_invalid(env, "cluster must be below 2^32");
    auto st = live(env);
    return run_async<std::vector<fat::Run>>(
        env, "lowtide:fat-chain",
        [st, c](std::vector<fat::Run>& out) {
          std::lock_guard<std::mutex> lock(st->mu);
          out = st->vol->chain(static_cast<uint32_t>(c), "cluster " + std::to_string(c), st->vol->info().base);
        },
        [st](Napi::Env env, std::vector<fat::Run>& out) -> Napi::Value {
          Napi::Array a = Napi::Array::New(env, out.size());
          for (size_t i = 0; i < out.size(); i++) {
            const fat::Run& r = out[i];
            Napi::Object o = Napi::Object::New(env);
            o.Set("cluster", num(env, r.first));
            o.Set("count", num(env, r.count));
            o.Set("offset", num(env, st->vol->cluster_offset(r.first)));
            o.Set("length", num(env, static_cast<uint64_t>(r.count) * st->vol->geo().cluster_size));
            a.Set(static_cast<uint32_t>(i), o);
          }
          return a;
        });
  }

  Napi::Value FileExtents(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::string path = string_arg(info, 0, "path");
    auto st = live(env);
    struct Out {
      fat::DirEntry entry;
      std::vector<fat::Extent> extents;
    };
    return run_async<Out>(
        env, "lowtide:fat-extents",
        [st, path](Out& out) {
          std::lock_guard<std::mutex> lock(st->mu);
          out.entry = st->vol->stat(path);
          if (out.entry.is_dir()) throw io::IoError("INVALID_ARGUMENT", out.entry.path + " is a directory, not a file");
          out.extents = st->vol->file_extents(out.entry);
        },
        [](Napi::Env env, Out& out) -> Napi::Value {
          Napi::Object o = Napi::Object::New(env);
          o.Set("entry", entry_to_js(env, out.entry));
          o.Set("extents", extents_to_js(env, out.extents));
          return o;
        });
  }

  Napi::Value ReadFile(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::string path = string_arg(info, 0, "path");
    auto st = live(env);
    return run_async<std::vector<uint8_t>>(
        env, "lowtide:fat-read",
        [st, path](std::vector<uint8_t>& out) {
          std::lock_guard<std::mutex> lock(st->mu);
          fat::DirEntry e = st->vol->stat(path);
          if (e.is_dir()) throw io::IoError("INVALID_ARGUMENT", e.path + " is a directory, not a file");
          std::vector<fat::Extent> ext = st->vol->file_extents(e);
          out.resize(e.size);
          size_t pos = 0;
          for (const fat::Extent& x : ext) {
            st->disk->read(x.offset, out.data() + pos, static_cast<size_t>(x.length));
            pos += static_cast<size_t>(x.length);
          }
        },
        [](Napi::Env env, std::vector<uint8_t>& out) -> Napi::Value {
          auto* data = new std::vector<uint8_t>(std::move(out));
          return Napi::Buffer<uint8_t>::NewOrCopy(env, data->data(), data->size(),
                                                  [](Napi::Env, uint8_t*, std::vector<uint8_t>* d) { delete d; }, data);
        });
  }

  Napi::Value CompareFats(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto st = live(env);
    return run_async<int64_t>(
        env, "lowtide:fat-compare",
        [st](int64_t& out) {
          std::lock_guard<std::mutex> lock(st->mu);
          out = st->vol->compare_fats();
        },
        [](Napi::Env env, int64_t& out) -> Napi::Value { return out < 0 ? env.Null() : Napi::Value(num(env, static_cast<uint64_t>(out))); });
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    state_.reset();  // running tasks keep their own reference until they finish
    return info.Env().Undefined();
  }

  std::shared_ptr<VolumeState> state_;
};

// readPartitions(path: string): Promise<PartitionTable>
Napi::Value ReadPartitions(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = string_arg(info, 0, "path");
  return run_async<part::PartitionTable>(
      env, "lowtide:partitions",
      [path](part::PartitionTable& out) {
        fat::SourceReader r(path);
        out = part::read_partition_table(r);
      },
      [](Napi::Env env, part::PartitionTable& out) -> Napi::Value { return table_to_js(env, out); });
}

// openVolume(path: string, offset: number, size: number): Promise<VolumeHandle>
// `size` 0 means "to the end of the source"; a size past the end is cut to it.
Napi::Value OpenVolume(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = string_arg(info, 0, "path");
  uint64_t offset = offset_arg(info, 1, "offset");
  uint64_t size = offset_arg(info, 2, "size");
  auto* ctor = static_cast<Napi::FunctionReference*>(info.Data());
  return run_async<std::shared_ptr<VolumeState>>(
      env, "lowtide:open-volume",
      [path, offset, size](std::shared_ptr<VolumeState>& st) {
        st = std::make_shared<VolumeState>();
        st->disk = std::make_unique<fat::SourceReader>(path);
        uint64_t total = st->disk->size();
        if (offset >= total)
          throw io::IoError("OUT_OF_RANGE",
                            "volume offset " + std::to_string(offset) + " is past the end of " + path + " (" + std::to_string(total) + " bytes)",
                            0, static_cast<int64_t>(offset));
        uint64_t avail = total - offset;
        uint64_t len = size == 0 ? avail : std::min(size, avail);
        st->window = std::make_unique<fat::WindowReader>(*st->disk, offset, len);
        st->vol = std::make_unique<fat::FatVolume>(*st->window, offset);
      },
      [ctor](Napi::Env env, std::shared_ptr<VolumeState>& st) -> Napi::Value {
        auto holder = std::make_unique<std::shared_ptr<VolumeState>>(st);
        Napi::Value ext = Napi::External<std::shared_ptr<VolumeState>>::New(env, holder.get());
        return ctor->New({ext});
      });
}

}  // namespace

void init_volume(Napi::Env env, Napi::Object exports) {
  Napi::Function ctor = VolumeHandle::Init(env);
  auto* ref = new Napi::FunctionReference(Napi::Persistent(ctor));
  env.AddCleanupHook([ref] { delete ref; });
  exports.Set("VolumeHandle", ctor);
  exports.Set("readPartitions", Napi::Function::New(env, ReadPartitions, "readPartitions"));
  exports.Set("openVolume", Napi::Function::New(env, OpenVolume, "openVolume", ref));
}

}  // namespace lowtide::napi
