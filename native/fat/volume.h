// A FAT12/16/32 volume read on demand through a ByteReader: geometry,
// FSInfo, label, dirty state, chains, directories, the allocation map.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "fat/boot_sector.h"
#include "fat/byte_reader.h"
#include "fat/dir.h"
#include "fat/fat_table.h"

namespace lowtide::fat {

struct FsInfo {
  bool present = false;              // FAT32 with an FSInfo sector
  bool valid = false;                // all three signatures correct
  uint32_t free_count = 0xFFFFFFFF;  // 0xFFFFFFFF: unknown
  uint32_t next_free = 0xFFFFFFFF;   // 0xFFFFFFFF: no hint
  uint64_t offset = 0;               // source byte offset of the sector
};

struct VolumeInfo {
  FatGeometry geo;
  uint64_t base = 0;  // volume offset on the source
  uint64_t size = 0;  // bytes available to the volume
  FsInfo fsinfo;
  std::optional<std::string> label;  // from the root directory
  uint32_t fat_media = 0;            // low byte of FAT[0]
  bool fat_dirty = false;            // FAT[1] "clean shutdown" bit clear (FAT16/32)
  bool fat_hard_error = false;       // FAT[1] "no hard error" bit clear (FAT16/32)
  bool dirty = false;                // boot-sector dirty bit or fat_dirty
  std::vector<std::string> warnings;
};

struct Run {
  uint32_t first;  // cluster
  uint32_t count;
};

struct Extent {
  uint64_t offset;  // source byte offset
  uint64_t length;
};

// A set of clusters (bit per cluster number).
class ClusterSet {
 public:
  explicit ClusterSet(uint32_t max_cluster) : words_((static_cast<size_t>(max_cluster) + 64) / 64, 0) {}
  bool test(uint32_t c) const { return (words_[c >> 6] >> (c & 63)) & 1; }
  void set(uint32_t c) { words_[c >> 6] |= uint64_t(1) << (c & 63); }
  // Bit c of word c / 64 is cluster c.
  const std::vector<uint64_t>& words() const { return words_; }

 private:
  std::vector<uint64_t> words_;
};

// Longest path from the volume root a listing or walk gives (Linux itself
// takes at most 4096 bytes in one call); a longer one is UNSUPPORTED.
constexpr size_t kMaxPathBytes = 16 * 1024;
// Most fragments (runs of consecutive clusters) of one file a walk lists with
// its extents (a backup's catalog, a file-level backup): past it the walk is
// UNSUPPORTED, found before more than this many runs are kept.
constexpr size_t kMaxFileExtents = size_t(1) << 20;
// Most bytes of paths one walk lists, all entries together (the size of a
// listing or catalog built from it; the walk itself keeps one name per entry).
constexpr uint64_t kMaxWalkPathBytes = 128ull << 20;
// A walk's entries of the root have this parent.
constexpr uint32_t kNoParent = UINT32_MAX;

// Full path of entry `i` of a walk's result (built from the parent links).
std::string entry_path(const std::vector<DirEntry>& entries, size_t i);

struct WalkStats {
  uint64_t files = 0;
  uint64_t directories = 0;
  uint64_t clusters_owned = 0;  // clusters reached from the root (directories + file chains)
  uint64_t orphan_lfn = 0;
  uint64_t deleted_entries = 0;
  uint64_t unsafe_names = 0;  // entries whose name was refused or escaped (DirEntry::unsafe)
};

class FatVolume {
 public:
  // `reader` covers exactly the volume (offset 0 = boot sector); `base` is the
  // volume's offset on the source, added to every offset reported.
  FatVolume(ByteReader& reader, uint64_t base);

  const VolumeInfo& info() const { return info_; }
  const FatGeometry& geo() const { return info_.geo; }

  // The cluster chain from `start`, validated (range, bad/free markers,
  // cycles). `owner` and `owner_offset` name what refers to it in errors.
  std::vector<Run> chain(uint32_t start, const std::string& owner, uint64_t owner_offset);

  // Entries of the directory at `path` ("/" is the root).
  std::vector<DirEntry> list(const std::string& path);
  // The entry at `path`; the root is returned as a directory entry named "".
  DirEntry stat(const std::string& path);
  // Every file and directory (depth first, directory order), each chain
  // checked for cycles and cross-links, directory loops detected. With
  // `check_files` false only directory chains are walked (a listing: files'
  // chains are neither checked nor counted in clusters_owned). With
  // `extents` (needs check_files) it also gets, for each returned entry, its
  // data extents as file_extents() gives them (none for directories).
  // Entries carry parent links, not paths (see entry_path()); a path longer
  // than kMaxPathBytes, or paths of more than kMaxWalkPathBytes in all, are
  // UNSUPPORTED.
  std::vector<DirEntry> walk(WalkStats* stats, bool check_files = true, std::vector<std::vector<Extent>>* extents = nullptr);
  // Source byte extents of a file's data, trimmed to its size.
  std::vector<Extent> file_extents(const DirEntry& e);
  // The first `size` bytes of a chain as source byte extents.
  std::vector<Extent> runs_to_extents(const std::vector<Run>& runs, uint64_t size) const;

  AllocationMap allocation_map();
  // Source byte offset of the first difference between FAT copies, or -1.
  int64_t compare_fats();

  uint64_t cluster_offset(uint32_t c) const {
    return info_.base + info_.geo.data_offset + static_cast<uint64_t>(c - 2) * info_.geo.cluster_size;
  }

  // Called when a chain reaches cluster `cluster`, already in `seen` but not
  // part of this chain (a cross-link). `where` is the source offset of the
  // offending link (FAT entry of `prev`, or the directory entry when prev is
  // 0). It may throw a more precise error; if it returns, the generic
  // cross-link error is thrown.
  using CrossLinkHandler = std::function<void(uint32_t cluster, uint32_t prev, uint64_t where)>;

  // The chain from `start`, validated like chain(); clusters already in `seen`
  // are cross-links (errors), and every cluster of the chain is added to it.
  // With `max_runs`, a chain of more runs than that is UNSUPPORTED.
  std::vector<Run> walk_chain(uint32_t start, const std::string& owner, uint64_t owner_offset, ClusterSet& seen,
                              const CrossLinkHandler* on_cross_link = nullptr, size_t max_runs = SIZE_MAX);
  // Reads a directory: first_cluster 0 is the root. `runs` is its chain
  // (ignored for a FAT12/16 root).
  // Entries get their full paths unless `set_paths` is false.
  DirParser read_dir(uint32_t first_cluster, const std::vector<Run>& runs, const std::string& path, bool set_paths = true);
  DirParser read_root(bool set_paths = true);
  // Raw entry of cluster `n` in the active FAT (range-checked).
  uint32_t fat_entry(uint32_t n) { return fat_->get(n); }
  // Source byte offset of FAT entry `n` in FAT copy `copy`.
  uint64_t fat_entry_offset(uint32_t n, uint32_t copy) const {
    return info_.base + info_.geo.fat_offset + static_cast<uint64_t>(copy) * info_.geo.fat_bytes + fat_->ops().entry_offset(n);
  }
  const FatOps& ops() const { return fat_->ops(); }

 private:
  ByteReader& reader_;
  VolumeInfo info_;
  std::unique_ptr<FatTable> fat_;
};

}  // namespace lowtide::fat
