// Node-API binding of the partition-table and FAT parsers.
//
//   readPartitions(path, format?): Promise<PartitionTable>
//   openVolume(path, offset, size, format?): Promise<VolumeHandle>   (size 0: to the end)
//
// `format` ('raw' when absent, 'qcow2' or 'auto') says how the path is read:
// a qcow2 image is read as its guest disk (qcow2/open.h), and offsets are
// then guest offsets.
//   VolumeHandle: info(), allocationMap(), list(path), stat(path), walk(),
//                 catalog(partition, excluded, frameBytes),
//                 chain(cluster), fileExtents(path), readFile(path),
//                 compareFats(), planDeletion(paths), close()
//
// Every byte offset handed to JS is an offset on the source (file or device,
// or the guest disk of a virtual disk).
// Sources are opened read-only (fat/source_reader.h) and read with pread;
// nothing is written.
#include <algorithm>
#include <memory>
#include <mutex>
#include <unordered_set>

#include "fat/catalog.h"
#include "fat/deletion.h"
#include "fat/source_reader.h"
#include "fat/volume.h"
#include "napi/async.h"
#include "napi/binding.h"
#include "napi/fat_values.h"
#include "part/partition.h"
#include "qcow2/open.h"

namespace lowtide::napi {
namespace {

// One opened FAT volume. Operations on it are serialised by `mu` (the FAT
// cache inside is not thread-safe); each piece of async work keeps the state
// alive.
struct VolumeState {
  std::mutex mu;
  std::unique_ptr<fat::ByteReader> disk;
  std::unique_ptr<fat::WindowReader> window;
  std::unique_ptr<fat::FatVolume> vol;
};

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

// The format argument at `i` (absent: raw).
qcow2::Format format_arg(const Napi::CallbackInfo& info, size_t i) {
  if (info.Length() <= i || info[i].IsUndefined()) return qcow2::Format::Raw;
  std::string f = string_arg(info, i, "format");
  if (f == "raw") return qcow2::Format::Raw;
  if (f == "qcow2") return qcow2::Format::Qcow2;
  if (f == "auto") return qcow2::Format::Auto;
  throw_invalid(info.Env(), "format must be 'raw', 'qcow2' or 'auto'");
}

std::unique_ptr<fat::ByteReader> open_disk_reader(const std::string& path, qcow2::Format format) {
  if (format == qcow2::Format::Raw) return std::make_unique<fat::SourceReader>(path);
  return std::move(qcow2::open_disk(path, format).chain);
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
        [st](Napi::Env env, fat::AllocationMap& out) -> Napi::Value { return allocation_map_to_js(env, *st->vol, out); });
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
        [st](Napi::Env env, fat::DeletionPlan& p) -> Napi::Value { return deletion_plan_to_js(env, *st->vol, p); });
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
          s.Set("unsafeNames", num(env, out.stats.unsafe_names));
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
          return Napi::Buffer<uint8_t>::NewOrCopy(
              env, data->data(), data->size(), [](Napi::Env, uint8_t*, std::vector<uint8_t>* d) { delete d; }, data);
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
        [](Napi::Env env, int64_t& out) -> Napi::Value {
          return out < 0 ? env.Null() : Napi::Value(num(env, static_cast<uint64_t>(out)));
        });
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
  qcow2::Format format = format_arg(info, 1);
  return run_async<part::PartitionTable>(
      env, "lowtide:partitions",
      [path, format](part::PartitionTable& out) {
        std::unique_ptr<fat::ByteReader> r = open_disk_reader(path, format);
        out = part::read_partition_table(*r);
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
  qcow2::Format format = format_arg(info, 3);
  auto* ctor = static_cast<Napi::FunctionReference*>(info.Data());
  return run_async<std::shared_ptr<VolumeState>>(
      env, "lowtide:open-volume",
      [path, offset, size, format](std::shared_ptr<VolumeState>& st) {
        st = std::make_shared<VolumeState>();
        st->disk = open_disk_reader(path, format);
        uint64_t total = st->disk->size();
        if (offset >= total)
          throw io::IoError(
              "OUT_OF_RANGE",
              "volume offset " + std::to_string(offset) + " is past the end of " + path + " (" + std::to_string(total) + " bytes)", 0,
              static_cast<int64_t>(offset));
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
