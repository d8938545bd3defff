#include "fat/volume.h"

#include <algorithm>

namespace lowtide::fat {
namespace {

constexpr const char* kCorrupt = "FAT_CORRUPT";

std::string fold(const std::string& s) {
  std::string r = s;
  for (char& c : r)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c + 32);
  return r;
}

std::vector<std::string> split_path(const std::string& path) {
  std::vector<std::string> parts;
  size_t i = 0;
  while (i <= path.size()) {
    size_t j = path.find('/', i);
    if (j == std::string::npos) j = path.size();
    std::string part = path.substr(i, j - i);
    if (part == "..")
      throw io::IoError("INVALID_ARGUMENT", "path " + path + " contains '..'; paths are absolute from the volume root");
    if (!part.empty() && part != ".") parts.push_back(std::move(part));
    i = j + 1;
  }
  return parts;
}

const DirEntry* find_entry(const std::vector<DirEntry>& entries, const std::string& name) {
  const std::string want = fold(name);
  for (const DirEntry& e : entries)
    if (e.name == name) return &e;
  for (const DirEntry& e : entries)
    if (fold(e.name) == want || fold(e.short_name) == want) return &e;
  return nullptr;
}

std::string join(const std::string& dir, const std::string& name) { return dir == "/" ? "/" + name : dir + "/" + name; }

}  // namespace

FatVolume::FatVolume(ByteReader& reader, uint64_t base) : reader_(reader) {
  info_.base = base;
  info_.size = reader.size();
  uint8_t boot[4096];
  size_t n = static_cast<size_t>(std::min<uint64_t>(sizeof boot, reader.size()));
  if (n < 512)
    corrupt(kCorrupt, "FAT boot sector", base,
            "the volume (" + std::to_string(reader.size()) + " bytes) is smaller than one boot sector");
  reader.read(0, boot, n);
  info_.geo = parse_boot_sector(boot, n, reader.size(), base);
  FatGeometry& g = info_.geo;
  info_.warnings = g.warnings;
  fat_ = std::make_unique<FatTable>(reader, g, g.active_fat, base);

  // FAT[0] carries the media byte; FAT[1] the clean-shutdown and hard-error bits.
  info_.fat_media = fat_->get(0) & 0xFF;
  if (info_.fat_media != g.media) info_.warnings.push_back("FAT[0] media byte differs from the boot sector's");
  uint32_t f1 = fat_->get(1);
  if (g.type == FatType::Fat16) {
    info_.fat_dirty = (f1 & 0x8000) == 0;
    info_.fat_hard_error = (f1 & 0x4000) == 0;
  } else if (g.type == FatType::Fat32) {
    info_.fat_dirty = (f1 & 0x08000000) == 0;
    info_.fat_hard_error = (f1 & 0x04000000) == 0;
  }
  info_.dirty = g.boot_dirty || info_.fat_dirty;

  if (g.type == FatType::Fat32 && g.fsinfo_sector != 0) {
    uint8_t s[512];
    uint64_t off = static_cast<uint64_t>(g.fsinfo_sector) * g.bytes_per_sector;
    reader.read(off, s, sizeof s);
    Bytes b(s, sizeof s, base + off, kCorrupt, "FSInfo sector");
    FsInfo& fi = info_.fsinfo;
    fi.present = true;
    fi.offset = base + off;
    fi.valid = b.u32(0) == 0x41615252 && b.u32(484) == 0x61417272 && b.u32(508) == 0xAA550000;
    if (fi.valid) {
      fi.free_count = b.u32(488);
      fi.next_free = b.u32(492);
      if (fi.free_count != 0xFFFFFFFF && fi.free_count > g.cluster_count) {
        info_.warnings.push_back("FSInfo free count " + std::to_string(fi.free_count) + " exceeds the cluster count; ignored");
        fi.free_count = 0xFFFFFFFF;
      }
      if (fi.next_free != 0xFFFFFFFF && (fi.next_free < 2 || fi.next_free > g.cluster_count + 1)) {
        info_.warnings.push_back("FSInfo next-free hint " + std::to_string(fi.next_free) + " is outside the clusters; ignored");
        fi.next_free = 0xFFFFFFFF;
      }
    } else {
      info_.warnings.push_back("FSInfo sector has bad signatures; ignored");
    }
  }

  try {
    DirParser root = read_root();
    info_.label = root.label;
  } catch (const io::IoError& e) {
    info_.warnings.push_back(std::string("root directory unreadable: ") + e.what());
  }
}

std::vector<Run> FatVolume::walk_chain(uint32_t start, const std::string& owner, uint64_t owner_offset, ClusterSet& seen,
                                       const CrossLinkHandler* on_cross_link, size_t max_runs) {
  const FatGeometry& g = info_.geo;
  const uint32_t last = g.cluster_count + 1;
  const FatOps& ops = fat_->ops();
  if (start < 2 || start > last)
    corrupt(kCorrupt, "directory entry of " + owner, owner_offset,
            "first cluster " + std::to_string(start) + " is outside clusters 2.." + std::to_string(last));
  std::vector<Run> runs;
  uint32_t cur = start, prev = 0;
  // Every cluster is visited at most once (the set), so this ends within cluster_count steps.
  for (;;) {
    if (seen.test(cur)) {
      bool in_this_chain = false;
      for (const Run& r : runs)
        if (cur >= r.first && cur - r.first < r.count) in_this_chain = true;
      // The offending link: the FAT entry of the previous cluster, or the directory entry.
      const uint64_t where = prev ? fat_->entry_source_offset(prev) : owner_offset;
      const std::string link = prev ? "FAT entry of cluster " + std::to_string(prev) : "the directory entry";
      if (in_this_chain)
        corrupt(kCorrupt, "cluster chain of " + owner, where,
                "the chain loops back: " + link + " links to cluster " + std::to_string(cur));
      if (on_cross_link) (*on_cross_link)(cur, prev, where);
      corrupt(kCorrupt, "cluster chain of " + owner, where,
              link + " links to cluster " + std::to_string(cur) + ", already used by another file or directory (cross-link)");
    }
    seen.set(cur);
    if (!runs.empty() && runs.back().first + runs.back().count == cur) runs.back().count++;
    else if (runs.size() < max_runs) runs.push_back(Run{cur, 1});
    else
      throw io::IoError("UNSUPPORTED",
                        "file " + owner.substr(0, 200) + ": more than " + std::to_string(max_runs) +
                            " fragments, the limit for a file listed with its extents",
                        0, static_cast<int64_t>(owner_offset));
    uint32_t next = fat_->get(cur);
    if (next >= ops.eoc_min) break;
    if (next == ops.bad)
      corrupt(kCorrupt, "cluster chain of " + owner, fat_->entry_source_offset(cur),
              "cluster " + std::to_string(cur) + " links to a bad cluster marker");
    if (next < 2)
      corrupt(kCorrupt, "cluster chain of " + owner, fat_->entry_source_offset(cur),
              "cluster " + std::to_string(cur) + (next == 0 ? " is marked free inside the chain" : " links to reserved value 1"));
    if (next > last)
      corrupt(kCorrupt, "cluster chain of " + owner, fat_->entry_source_offset(cur),
              "cluster " + std::to_string(cur) + " links to cluster " + std::to_string(next) + ", past the last cluster " +
                  std::to_string(last));
    prev = cur;
    cur = next;
  }
  return runs;
}

std::vector<Run> FatVolume::chain(uint32_t start, const std::string& owner, uint64_t owner_offset) {
  ClusterSet seen(info_.geo.cluster_count + 1);
  return walk_chain(start, owner, owner_offset, seen);
}

DirParser FatVolume::read_root(bool set_paths) {
  const FatGeometry& g = info_.geo;
  if (g.type == FatType::Fat32) {
    std::vector<Run> runs = chain(g.root_cluster, "the root directory", info_.base + 0x2C);
    return read_dir(g.root_cluster, runs, "/", set_paths);
  }
  DirParser p(true, false);
  std::vector<uint8_t> buf(g.root_dir_bytes);
  reader_.read(g.root_dir_offset, buf.data(), buf.size());
  size_t slots = std::min<size_t>(buf.size() / kDirEntrySize, g.root_entries);
  for (size_t i = 0; i < slots; i++)
    if (!p.feed(buf.data() + i * kDirEntrySize, info_.base + g.root_dir_offset + i * kDirEntrySize)) break;
  if (set_paths)
    for (DirEntry& e : p.entries) e.path = join("/", e.name);
  return p;
}

DirParser FatVolume::read_dir(uint32_t first_cluster, const std::vector<Run>& runs, const std::string& path, bool set_paths) {
  const FatGeometry& g = info_.geo;
  const bool root = path == "/";
  if (first_cluster == 0) return read_root(set_paths);
  DirParser p(root, g.type == FatType::Fat32);
  std::vector<uint8_t> buf(g.cluster_size);
  const uint32_t per_cluster = g.cluster_size / kDirEntrySize;
  for (const Run& r : runs) {
    for (uint32_t i = 0; i < r.count && !p.ended(); i++) {
      uint32_t c = r.first + i;
      uint64_t rel = g.data_offset + static_cast<uint64_t>(c - 2) * g.cluster_size;
      reader_.read(rel, buf.data(), buf.size());
      for (uint32_t k = 0; k < per_cluster; k++) {
        if (p.slots >= kMaxDirEntries)
          corrupt(kCorrupt, "directory " + path, info_.base + rel + k * kDirEntrySize,
                  "more than 65536 entries without an end marker");
        if (!p.feed(buf.data() + k * kDirEntrySize, info_.base + rel + k * kDirEntrySize)) break;
      }
    }
    if (p.ended()) break;
  }
  if (!set_paths) return p;
  for (DirEntry& e : p.entries) {
    e.path = join(path, e.name);
    if (e.path.size() > kMaxPathBytes)
      throw io::IoError("UNSUPPORTED",
                        "directory " + path.substr(0, 200) + "...: a path of " + std::to_string(e.path.size()) +
                            " bytes, longer than the limit of " + std::to_string(kMaxPathBytes) +
                            " bytes (directories nested too deep)",
                        0, static_cast<int64_t>(e.offset));
  }
  return p;
}

DirEntry FatVolume::stat(const std::string& path) {
  std::vector<std::string> parts = split_path(path);
  DirEntry cur;
  cur.attr = kAttrDirectory;
  cur.path = "/";
  cur.first_cluster = 0;  // root
  for (const std::string& part : parts) {
    if (!cur.is_dir()) throw io::IoError("NOT_FOUND", "not a directory: " + cur.path + " (resolving " + path + ")");
    std::vector<DirEntry> entries;
    if (cur.first_cluster == 0) {
      entries = read_root().entries;
    } else {
      std::vector<Run> runs = chain(cur.first_cluster, cur.path, cur.offset);
      entries = read_dir(cur.first_cluster, runs, cur.path).entries;
    }
    const DirEntry* e = find_entry(entries, part);
    if (!e) throw io::IoError("NOT_FOUND", "no such file or directory: " + join(cur.path, part));
    cur = *e;
    if (cur.is_dir() && cur.first_cluster == 0)
      corrupt(kCorrupt, "directory entry of " + cur.path, cur.offset, "a subdirectory with first cluster 0");
  }
  return cur;
}

std::vector<DirEntry> FatVolume::list(const std::string& path) {
  DirEntry d = stat(path);
  if (!d.is_dir()) throw io::IoError("INVALID_ARGUMENT", "not a directory: " + d.path);
  if (d.first_cluster == 0) return read_root().entries;
  std::vector<Run> runs = chain(d.first_cluster, d.path, d.offset);
  return read_dir(d.first_cluster, runs, d.path).entries;
}

std::string entry_path(const std::vector<DirEntry>& entries, size_t i) {
  std::string path(entries[i].path_bytes, '/');
  size_t end = path.size();
  for (size_t at = i; at != kNoParent && at < entries.size(); at = entries[at].parent) {
    const std::string& name = entries[at].name;
    if (name.size() + 1 > end) break;  // not a walk's entry: path_bytes unset
    end -= name.size();
    path.replace(end, name.size(), name);
    end--;  // the '/' before it
  }
  return path;
}

std::vector<DirEntry> FatVolume::walk(WalkStats* stats, bool check_files, std::vector<std::vector<Extent>>* extents) {
  const FatGeometry& g = info_.geo;
  if (extents && !check_files) throw io::IoError("INTERNAL", "walk: extents need check_files");
  if (extents) extents->clear();
  ClusterSet seen(g.cluster_count + 1);
  WalkStats st;
  std::vector<DirEntry> out;

  // One frame per open directory: its entries not yet visited. Paths are not
  // kept: each entry links to its parent in `out`, and a path is built only
  // for a message (memory grows with the entries, not with depth x name).
  struct Frame {
    std::vector<DirEntry> entries;
    size_t next = 0;
    uint32_t cluster;  // 0 for a FAT12/16 root
    uint32_t index;    // of the directory in `out`; kNoParent for the root
    uint32_t path_bytes;
  };
  std::vector<Frame> stack;
  {
    std::vector<Run> runs;
    uint32_t rc = 0;
    if (g.type == FatType::Fat32) {
      rc = g.root_cluster;
      runs = walk_chain(rc, "the root directory", info_.base + 0x2C, seen);
      for (const Run& r : runs) st.clusters_owned += r.count;
    }
    DirParser p = rc ? read_dir(rc, runs, "/", false) : read_root(false);
    st.orphan_lfn += p.orphan_lfn;
    st.deleted_entries += p.deleted;
    for (const DirEntry& x : p.entries) st.unsafe_names += x.unsafe.empty() ? 0 : 1;
    stack.push_back(Frame{std::move(p.entries), 0, rc, kNoParent, 0});
  }
  auto dir_path = [&](uint32_t index) { return index == kNoParent ? std::string("/") : entry_path(out, index); };
  uint64_t path_bytes = 0;  // of the entries in `out`: bounded by kMaxWalkPathBytes
  while (!stack.empty()) {
    Frame& top = stack.back();
    if (top.next >= top.entries.size()) {
      stack.pop_back();
      continue;
    }
    DirEntry e = std::move(top.entries[top.next++]);
    const uint32_t parent = top.index;
    e.parent = parent;
    e.path_bytes = top.path_bytes + 1 + static_cast<uint32_t>(std::min<size_t>(e.name.size(), kMaxPathBytes));
    if (e.path_bytes > kMaxPathBytes) {
      std::string dir = dir_path(parent);
      throw io::IoError("UNSUPPORTED",
                        "directory " + dir.substr(0, 200) + "...: a path of " + std::to_string(e.path_bytes) +
                            " bytes, longer than the limit of " + std::to_string(kMaxPathBytes) +
                            " bytes (directories nested too deep)",
                        0, static_cast<int64_t>(e.offset));
    }
    path_bytes += e.path_bytes;
    if (path_bytes > kMaxWalkPathBytes)
      throw io::IoError("UNSUPPORTED",
                        "the paths of the " + std::to_string(out.size() + 1) + " entries walked so far take more than " +
                            std::to_string(kMaxWalkPathBytes >> 20) + " MiB (directories nested too deep or too many entries)",
                        0, static_cast<int64_t>(e.offset));
    if (out.size() >= kNoParent)
      throw io::IoError("UNSUPPORTED", "more than " + std::to_string(kNoParent) + " entries in one volume", 0,
                        static_cast<int64_t>(e.offset));
    auto path_of_e = [&]() { return join(dir_path(parent), e.name); };
    if (e.is_dir()) {
      st.directories++;
      if (e.first_cluster == 0)
        corrupt(kCorrupt, "directory entry of " + path_of_e(), e.offset, "a subdirectory with first cluster 0 (the root)");
      for (const Frame& f : stack)
        if (f.cluster == e.first_cluster)
          corrupt(kCorrupt, "directory entry of " + path_of_e(), e.offset,
                  "the directory is its own ancestor " + dir_path(f.index) + " (cluster " + std::to_string(e.first_cluster) + ")");
      std::vector<Run> runs = walk_chain(e.first_cluster, path_of_e(), e.offset, seen);
      for (const Run& r : runs) st.clusters_owned += r.count;
      DirParser p = read_dir(e.first_cluster, runs, path_of_e(), false);
      st.orphan_lfn += p.orphan_lfn;
      st.deleted_entries += p.deleted;
      for (const DirEntry& x : p.entries) st.unsafe_names += x.unsafe.empty() ? 0 : 1;
      const uint32_t cl = e.first_cluster, bytes = e.path_bytes;
      const uint32_t index = static_cast<uint32_t>(out.size());
      out.push_back(std::move(e));
      if (extents) extents->emplace_back();
      stack.push_back(Frame{std::move(p.entries), 0, cl, index, bytes});  // invalidates `top`
      continue;
    }
    st.files++;
    if (!check_files) {
      out.push_back(std::move(e));
      continue;
    }
    std::vector<Extent> data;
    if (e.first_cluster != 0) {
      std::vector<Run> runs = walk_chain(e.first_cluster, path_of_e(), e.offset, seen, nullptr, extents ? kMaxFileExtents : SIZE_MAX);
      uint64_t have = 0;
      for (const Run& r : runs) have += r.count;
      st.clusters_owned += have;
      uint64_t need = (static_cast<uint64_t>(e.size) + g.cluster_size - 1) / g.cluster_size;
      if (have < need)
        corrupt(kCorrupt, "directory entry of " + path_of_e(), e.offset,
                "file size " + std::to_string(e.size) + " needs " + std::to_string(need) + " clusters but its chain has " +
                    std::to_string(have));
      if (extents) data = runs_to_extents(runs, e.size);
    } else if (e.size != 0) {
      corrupt(kCorrupt, "directory entry of " + path_of_e(), e.offset, "file of " + std::to_string(e.size) + " bytes has no clusters");
    }
    out.push_back(std::move(e));
    if (extents) extents->push_back(std::move(data));
  }
  if (stats) *stats = st;
  return out;
}

std::vector<Extent> FatVolume::file_extents(const DirEntry& e) {
  const FatGeometry& g = info_.geo;
  std::vector<Extent> out;
  if (e.size == 0) return out;
  if (e.first_cluster == 0)
    corrupt(kCorrupt, "directory entry of " + e.path, e.offset, "file of " + std::to_string(e.size) + " bytes has no clusters");
  std::vector<Run> runs = chain(e.first_cluster, e.path, e.offset);
  uint64_t have = 0;
  for (const Run& r : runs) have += static_cast<uint64_t>(r.count) * g.cluster_size;
  if (have < e.size)
    corrupt(kCorrupt, "directory entry of " + e.path, e.offset,
            "file size " + std::to_string(e.size) + " is larger than its cluster chain");
  return runs_to_extents(runs, e.size);
}

std::vector<Extent> FatVolume::runs_to_extents(const std::vector<Run>& runs, uint64_t size) const {
  std::vector<Extent> out;
  out.reserve(runs.size());
  uint64_t remaining = size;
  for (const Run& r : runs) {
    if (remaining == 0) break;
    uint64_t len = std::min<uint64_t>(remaining, static_cast<uint64_t>(r.count) * info_.geo.cluster_size);
    out.push_back(Extent{cluster_offset(r.first), len});
    remaining -= len;
  }
  return out;
}

AllocationMap FatVolume::allocation_map() { return build_allocation_map(reader_, info_.geo, info_.geo.active_fat); }

int64_t FatVolume::compare_fats() {
  int64_t off = compare_fat_copies(reader_, info_.geo);
  return off < 0 ? off : off + static_cast<int64_t>(info_.base);
}

}  // namespace lowtide::fat
