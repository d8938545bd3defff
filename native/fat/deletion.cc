#include "fat/deletion.h"

#include <algorithm>
#include <unordered_set>

#include "fat/overlay.h"

namespace lowtide::fat {
namespace {

constexpr const char* kCorrupt = "FAT_CORRUPT";

// Everything that owns a cluster chain, in the order the walk met it.
struct Owner {
  std::string path;
  uint32_t first;
  bool excluded;
};

struct Frame {
  std::vector<DirEntry> entries;
  size_t next = 0;
  uint32_t cluster = 0;  // 0: the fixed FAT12/16 root
  std::string path;
  std::vector<Run> runs;  // the directory's chain (empty for the fixed root)
  bool excluded = false;
};

class Planner {
 public:
  Planner(FatVolume& vol, ByteReader& reader)
      : vol_(vol), reader_(reader), g_(vol.geo()), base_(vol.info().base), last_(g_.cluster_count + 1), seen_(last_), freed_(last_) {}

  // Targets: paths exactly as the walk spells them (cheap: matched during the
  // walk) and 8.3 entry offsets (paths resolved by name beforehand).
  void add_path(const std::string& p) { target_paths_.insert(p); }
  void add_offset(uint64_t off) { target_offsets_.insert(off); }

  // Walks the whole tree; returns the target paths that were not met.
  std::vector<std::string> walk_all() {
    walk();
    std::vector<std::string> missing;
    for (const std::string& p : target_paths_)
      if (!reached_paths_.count(p)) missing.push_back(p);
    for (uint64_t off : target_offsets_)
      if (!reached_offsets_.count(off))
        throw io::IoError("INTERNAL", "an excluded path was found by name but not reached by the walk");
    return missing;
  }

  DeletionPlan finish() {
    apply();
    return std::move(plan_);
  }

 private:
  // Finds the chain other than the current one that holds `cluster`. Every
  // earlier chain was walked completely without error, so each is finite.
  const Owner* owner_of(uint32_t cluster) {
    const FatOps& ops = vol_.ops();
    for (size_t i = 0; i + 1 < owners_.size(); i++) {
      uint32_t c = owners_[i].first;
      for (uint64_t steps = 0; c >= 2 && c <= last_ && steps <= last_; steps++) {
        if (c == cluster) return &owners_[i];
        uint32_t next = vol_.fat_entry(c);
        if (next >= ops.eoc_min) break;
        c = next;
      }
    }
    return nullptr;
  }

  std::vector<Run> chain_of(const std::string& path, uint32_t first, uint64_t entry_offset, bool excluded) {
    owners_.push_back(Owner{path, first, excluded});
    FatVolume::CrossLinkHandler on_cross = [&](uint32_t cluster, uint32_t prev, uint64_t where) {
      const Owner* other = owner_of(cluster);
      if (!other) return;  // the generic cross-link error follows
      const std::string link =
          prev ? "the FAT entry of cluster " + std::to_string(prev) + " (byte offset " + std::to_string(where) + ")"
               : "the directory entry (byte offset " + std::to_string(where) + ")";
      std::string msg = "cluster " + std::to_string(cluster) + " (data at byte offset " +
                        std::to_string(vol_.cluster_offset(cluster)) + ") is in the chains of both " + other->path + " and " + path +
                        "; " + link + " links to it (cross-link)";
      if (excluded != other->excluded) {
        const std::string& gone = excluded ? path : other->path;
        const std::string& kept = excluded ? other->path : path;
        msg += ": excluding " + gone + " would free a cluster that the kept " + kept + " still uses";
      }
      corrupt(kCorrupt, "cluster chain of " + path, where, msg);
    };
    std::vector<Run> runs = vol_.walk_chain(first, path, entry_offset, seen_, &on_cross);
    if (excluded) {
      for (const Run& r : runs)
        for (uint32_t i = 0; i < r.count; i++) freed_.set(r.first + i);
    }
    return runs;
  }

  // Source offsets of an entry's long-name slots and its 8.3 slot, in
  // directory order (slots of one entry may straddle a cluster boundary).
  std::vector<uint64_t> slots_of(const Frame& dir, const DirEntry& e) {
    std::vector<uint64_t> out;
    uint64_t off = e.lfn_offset;
    const uint32_t cs = g_.cluster_size;
    for (uint32_t i = 0; i <= e.lfn_slots; i++) {
      out.push_back(off);
      if (i == e.lfn_slots) break;
      if (dir.cluster == 0) {
        off += kDirEntrySize;
        continue;
      }
      const uint64_t rel = off - base_ - g_.data_offset;
      const uint32_t c = static_cast<uint32_t>(rel / cs) + 2;
      if (rel % cs + kDirEntrySize < cs) {
        off += kDirEntrySize;
        continue;
      }
      uint32_t next = 0;
      for (size_t k = 0; k < dir.runs.size(); k++) {
        const Run& r = dir.runs[k];
        if (c >= r.first && c - r.first < r.count) {
          if (c + 1 - r.first < r.count) next = c + 1;
          else if (k + 1 < dir.runs.size()) next = dir.runs[k + 1].first;
          break;
        }
      }
      if (next == 0)
        corrupt(kCorrupt, "directory entry of " + e.path, e.lfn_offset,
                "its long-name slots run past the end of directory " + dir.path);
      off = vol_.cluster_offset(next);
    }
    if (out.back() != e.offset)
      corrupt(kCorrupt, "directory entry of " + e.path, e.offset,
              "its long-name slots do not lead to its 8.3 entry (internal inconsistency)");
    return out;
  }

  void walk() {
    std::vector<Frame> stack;
    {
      Frame root;
      root.path = "/";
      if (g_.type == FatType::Fat32) {
        root.cluster = g_.root_cluster;
        root.runs = chain_of("the root directory", g_.root_cluster, base_ + 0x2C, false);
        root.entries = vol_.read_dir(root.cluster, root.runs, "/").entries;
      } else {
        root.entries = vol_.read_root().entries;
      }
      stack.push_back(std::move(root));
    }
    while (!stack.empty()) {
      Frame& top = stack.back();
      if (top.next >= top.entries.size()) {
        stack.pop_back();
        continue;
      }
      DirEntry e = std::move(top.entries[top.next++]);
      bool requested = false;
      if (target_offsets_.count(e.offset)) {
        reached_offsets_.insert(e.offset);
        requested = true;
      }
      if (target_paths_.count(e.path)) {
        reached_paths_.insert(e.path);
        requested = true;
      }
      // Inside an excluded directory an entry goes with it: nothing to mark.
      const bool is_top = requested && !top.excluded;
      const bool excluded = top.excluded || is_top;
      if (is_top)
        for (uint64_t s : slots_of(top, e)) marks_.push_back(s);
      if (excluded) {
        plan_.excluded.push_back(ExcludedEntry{e.path, e.is_dir() ? 0 : e.size, e.is_dir(), is_top});
        if (!e.is_dir()) plan_.bytes_excluded += e.size;
      }
      if (e.is_dir()) {
        if (e.first_cluster == 0)
          corrupt(kCorrupt, "directory entry of " + e.path, e.offset, "a subdirectory with first cluster 0 (the root)");
        for (const Frame& f : stack)
          if (f.cluster == e.first_cluster)
            corrupt(kCorrupt, "directory entry of " + e.path, e.offset,
                    "the directory is its own ancestor " + f.path + " (cluster " + std::to_string(e.first_cluster) + ")");
        Frame child;
        child.runs = chain_of(e.path, e.first_cluster, e.offset, excluded);
        child.entries = vol_.read_dir(e.first_cluster, child.runs, e.path).entries;
        child.cluster = e.first_cluster;
        child.path = e.path;
        child.excluded = excluded;
        stack.push_back(std::move(child));  // invalidates `top`
        continue;
      }
      if (e.first_cluster != 0) chain_of(e.path, e.first_cluster, e.offset, excluded);
    }
  }

  void apply() {
    OverlayReader ov(reader_, g_.bytes_per_sector);
    const FatOps& ops = vol_.ops();
    if (g_.mirroring) {
      for (uint32_t k = 0; k < g_.num_fats; k++) plan_.fat_copies.push_back(k);
    } else {
      plan_.fat_copies.push_back(g_.active_fat);  // the others are not live (BPB_ExtFlags)
    }

    // Free the chains.
    const std::vector<uint64_t>& words = freed_.words();
    uint32_t run_first = 0, run_count = 0;
    auto flush_run = [&] {
      if (run_count)
        plan_.freed_runs.push_back(Extent{vol_.cluster_offset(run_first), static_cast<uint64_t>(run_count) * g_.cluster_size});
      run_count = 0;
    };
    for (size_t w = 0; w < words.size(); w++) {
      uint64_t bits = words[w];
      while (bits) {
        const uint32_t c = static_cast<uint32_t>(w * 64 + static_cast<size_t>(__builtin_ctzll(bits)));
        bits &= bits - 1;
        for (uint32_t k : plan_.fat_copies) {
          const uint64_t off = g_.fat_offset + static_cast<uint64_t>(k) * g_.fat_bytes + ops.entry_offset(c);
          if (uint8_t* p = ov.span(off, ops.entry_bytes)) {
            ops.encode(p, c, 0);
          } else {  // a FAT12 entry across two sectors
            uint8_t buf[4];
            ov.read(off, buf, ops.entry_bytes);
            ops.encode(buf, c, 0);
            ov.write(off, buf, ops.entry_bytes);
          }
        }
        if (plan_.freed_clusters == 0) plan_.lowest_freed = c;
        plan_.freed_clusters++;
        if (run_count && run_first + run_count == c) {
          run_count++;
        } else {
          flush_run();
          run_first = c;
          run_count = 1;
        }
      }
    }
    flush_run();
    plan_.freed_bytes = plan_.freed_clusters * g_.cluster_size;

    // Mark the entries deleted (first byte 0xE5), long-name slots included.
    std::sort(marks_.begin(), marks_.end());
    marks_.erase(std::unique(marks_.begin(), marks_.end()), marks_.end());
    const uint8_t deleted = 0xE5;
    for (uint64_t s : marks_) ov.write(s - base_, &deleted, 1);
    plan_.entries_marked = marks_.size();

    plan_.map_after = build_allocation_map(ov, g_, g_.active_fat);

    // FSInfo.
    const FsInfo& fi = vol_.info().fsinfo;
    plan_.fsinfo_free_before = plan_.fsinfo_free_after = fi.free_count;
    plan_.fsinfo_next_free_before = plan_.fsinfo_next_free_after = fi.next_free;
    if (fi.present && fi.valid && plan_.freed_clusters > 0) {
      const uint64_t free_now = plan_.map_after.free;
      const uint64_t free_then = free_now - plan_.freed_clusters;
      uint32_t new_free;
      if (fi.free_count != 0xFFFFFFFF && fi.free_count == free_then) {
        new_free = static_cast<uint32_t>(fi.free_count + plan_.freed_clusters);
        plan_.fsinfo = FsInfoUpdate::Updated;
      } else {
        new_free = static_cast<uint32_t>(free_now);
        plan_.fsinfo = FsInfoUpdate::Recomputed;
      }
      uint32_t new_next = fi.next_free;
      if (new_next != 0xFFFFFFFF && plan_.lowest_freed < new_next) new_next = plan_.lowest_freed;
      const uint64_t rel = fi.offset - base_;
      uint8_t b[8];
      for (int i = 0; i < 4; i++) b[i] = static_cast<uint8_t>(new_free >> (8 * i));
      ov.write(rel + 488, b, 4);
      if (new_next != fi.next_free) {
        for (int i = 0; i < 4; i++) b[4 + i] = static_cast<uint8_t>(new_next >> (8 * i));
        ov.write(rel + 492, b + 4, 4);
      }
      plan_.fsinfo_free_after = new_free;
      plan_.fsinfo_next_free_after = new_next;
    }

    // The overlay's sectors are the writes.
    const uint32_t ss = g_.bytes_per_sector;
    plan_.sector_size = ss;
    plan_.write_offsets.reserve(ov.sectors().size());
    plan_.write_data.reserve(ov.sectors().size() * ss);
    for (const auto& [index, data] : ov.sectors()) {
      plan_.write_offsets.push_back(base_ + index * ss);
      plan_.write_data.insert(plan_.write_data.end(), data.get(), data.get() + ss);
    }
  }

  FatVolume& vol_;
  ByteReader& reader_;
  const FatGeometry& g_;
  const uint64_t base_;
  const uint32_t last_;
  ClusterSet seen_;
  ClusterSet freed_;
  std::unordered_set<std::string> target_paths_;
  std::unordered_set<uint64_t> target_offsets_;
  std::unordered_set<std::string> reached_paths_;
  std::unordered_set<uint64_t> reached_offsets_;
  std::vector<Owner> owners_;
  std::vector<uint64_t> marks_;  // source offsets of slots to mark deleted
  DeletionPlan plan_;
};

}  // namespace

const char* fsinfo_update_name(FsInfoUpdate u) {
  switch (u) {
    case FsInfoUpdate::Updated: return "updated";
    case FsInfoUpdate::Recomputed: return "recomputed";
    case FsInfoUpdate::None: break;
  }
  return "none";
}

DeletionPlan plan_deletion(FatVolume& vol, ByteReader& reader, const std::vector<std::string>& paths) {
  for (const std::string& p : paths) {
    bool root = true;
    size_t i = 0;
    while (i <= p.size() && root) {
      size_t j = p.find('/', i);
      if (j == std::string::npos) j = p.size();
      const std::string part = p.substr(i, j - i);
      if (!part.empty() && part != ".") root = false;
      i = j + 1;
    }
    if (root) throw io::IoError("INVALID_ARGUMENT", "the root directory cannot be excluded (path \"" + p + "\")");
  }
  // Paths as the walk spells them are matched during the walk.
  Planner first(vol, reader);
  for (const std::string& p : paths) first.add_path(p);
  std::vector<std::string> missing = first.walk_all();
  if (missing.empty()) return first.finish();
  // Others (8.3 names, another case, extra slashes) are resolved by name
  // first, then everything is walked again.
  Planner second(vol, reader);
  std::unordered_set<std::string> by_name(missing.begin(), missing.end());
  for (const std::string& p : paths) {
    if (!by_name.count(p)) {
      second.add_path(p);
      continue;
    }
    DirEntry e = vol.stat(p);  // NOT_FOUND, INVALID_ARGUMENT ('..')
    if (e.path == "/") throw io::IoError("INVALID_ARGUMENT", "the root directory cannot be excluded (path \"" + p + "\")");
    second.add_offset(e.offset);
  }
  if (!second.walk_all().empty()) throw io::IoError("INTERNAL", "an excluded path was met in one walk but not the next");
  return second.finish();
}

}  // namespace lowtide::fat
