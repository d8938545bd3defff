// FAT and partition-table results as JS values.
#include "napi/fat_values.h"

#include <bit>
#include <string>
#include <utility>
#include <vector>

namespace lowtide::napi {

static_assert(std::endian::native == std::endian::little, "the allocation bitmap is handed out as little-endian words");

namespace {

Napi::String str(Napi::Env env, const std::string& s) { return Napi::String::New(env, s); }

Napi::Array strings(Napi::Env env, const std::vector<std::string>& v) {
  Napi::Array a = Napi::Array::New(env, v.size());
  for (size_t i = 0; i < v.size(); i++) a.Set(static_cast<uint32_t>(i), str(env, v[i]));
  return a;
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

}  // namespace

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

Napi::Object entry_to_js(Napi::Env env, const fat::DirEntry& e, const std::string* path) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("path", str(env, path ? *path : e.path));
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
  if (!e.unsafe.empty()) o.Set("unsafeName", str(env, e.unsafe));
  return o;
}

Napi::Array entries_to_js(Napi::Env env, const std::vector<fat::DirEntry>& v) {
  Napi::Array a = Napi::Array::New(env, v.size());
  for (size_t i = 0; i < v.size(); i++) {
    if (v[i].path.empty() && v[i].path_bytes > 0) {  // a walk's entry: the path from its parent links
      const std::string path = fat::entry_path(v, i);
      a.Set(static_cast<uint32_t>(i), entry_to_js(env, v[i], &path));
    } else {
      a.Set(static_cast<uint32_t>(i), entry_to_js(env, v[i]));
    }
  }
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

Napi::Object allocation_map_to_js(Napi::Env env, const fat::FatVolume& vol, fat::AllocationMap& m) {
  const fat::FatGeometry& g = vol.geo();
  auto* words = new std::vector<uint64_t>(std::move(m.words));
  size_t bytes = (static_cast<size_t>(m.cluster_count) + 7) / 8;
  Napi::Buffer<uint8_t> buf = Napi::Buffer<uint8_t>::NewOrCopy(
      env, reinterpret_cast<uint8_t*>(words->data()), bytes, [](Napi::Env, uint8_t*, std::vector<uint64_t>* w) { delete w; }, words);
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

Napi::Object deletion_plan_to_js(Napi::Env env, const fat::FatVolume& vol, fat::DeletionPlan& p) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("sectorSize", num(env, p.sector_size));
  Napi::Float64Array offs = Napi::Float64Array::New(env, p.write_offsets.size());
  for (size_t i = 0; i < p.write_offsets.size(); i++) offs[i] = static_cast<double>(p.write_offsets[i]);
  o.Set("writeOffsets", offs);
  auto* data = new std::vector<uint8_t>(std::move(p.write_data));
  o.Set("writeData", Napi::Buffer<uint8_t>::NewOrCopy(
                         env, data->data(), data->size(), [](Napi::Env, uint8_t*, std::vector<uint8_t>* d) { delete d; }, data));
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
  o.Set("allocationMap", allocation_map_to_js(env, vol, p.map_after));
  return o;
}

}  // namespace lowtide::napi
