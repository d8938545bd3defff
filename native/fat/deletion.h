// Exclusions as deletions on a copy-on-write overlay: the metadata sectors a
// deletion of some files and directory trees would change (FAT entries in
// every live FAT copy, directory entries and their long-name slots, FSInfo),
// computed without writing the source. Plain C++: no Node-API types.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "fat/byte_reader.h"
#include "fat/fat_table.h"
#include "fat/volume.h"

namespace lowtide::fat {

struct ExcludedEntry {
  std::string path;
  uint32_t size = 0;  // 0 for directories
  bool is_dir = false;
  bool top = false;  // one of the requested paths (not only inside one)
};

enum class FsInfoUpdate : uint8_t {
  None,        // no FSInfo, bad signatures, or nothing freed: left as it is
  Updated,     // the stored free count was right: raised by the clusters freed
  Recomputed,  // the stored count was unknown or wrong: set from the new allocation map
};

const char* fsinfo_update_name(FsInfoUpdate u);

struct DeletionPlan {
  uint32_t sector_size = 0;
  // Overlay sectors: source byte offsets (ascending, sector-aligned relative to
  // the volume) and sector_size bytes each, in the same order.
  std::vector<uint64_t> write_offsets;
  std::vector<uint8_t> write_data;
  uint64_t freed_clusters = 0;
  uint64_t freed_bytes = 0;
  uint32_t lowest_freed = 0;            // 0 when nothing was freed
  std::vector<Extent> freed_runs;       // source byte extents of the freed clusters, ascending
  std::vector<ExcludedEntry> excluded;  // depth first, directory order
  uint64_t bytes_excluded = 0;          // sum of the excluded files' sizes
  uint64_t entries_marked = 0;          // directory slots marked deleted (8.3 + long-name)
  FsInfoUpdate fsinfo = FsInfoUpdate::None;
  uint32_t fsinfo_free_before = 0xFFFFFFFF;  // as stored (0xFFFFFFFF: unknown or absent)
  uint32_t fsinfo_free_after = 0xFFFFFFFF;
  uint32_t fsinfo_next_free_before = 0xFFFFFFFF;
  uint32_t fsinfo_next_free_after = 0xFFFFFFFF;
  std::vector<uint32_t> fat_copies;  // FAT copies written
  AllocationMap map_after;           // from the active FAT as the overlay has it
};

// Plans the deletion of `paths` (from the volume root; resolved like
// FatVolume::stat, so long or 8.3 names, any case). A directory takes its
// whole subtree. `reader` is the volume's reader (offset 0 = boot sector),
// the same one `vol` reads. Never writes. Throws io::IoError:
//   INVALID_ARGUMENT  the root directory was named
//   NOT_FOUND         a path does not exist
//   FAT_CORRUPT       a chain loops, leaves the clusters, holds a free, bad or
//                     reserved entry, or is cross-linked with another (the
//                     message names both paths, the cluster and the offsets);
//                     a directory that contains its own ancestor
DeletionPlan plan_deletion(FatVolume& vol, ByteReader& reader, const std::vector<std::string>& paths);

}  // namespace lowtide::fat
