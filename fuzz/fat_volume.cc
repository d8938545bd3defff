// A FAT12/16/32 volume (the whole disk, as a superfloppy): open, FAT copies
// compared, the allocation map, the directory walk (listing and full), stat,
// list, chains and file extents of the first entries, and the catalog lines.
//
// Options (fuzz/fuzz_input.h): bit i (i < 16) set leaves the walk's entry i
// out of the catalog, with its subtree.
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_set>
#include <vector>

#include "fat/catalog.h"
#include "fat/volume.h"
#include "fuzz_input.h"

namespace {

using namespace lowtide;

void check_extent(const fat::FatVolume& vol, const fat::AllocationMap& map, const fat::Extent& x, const std::string& path) {
  const fat::FatGeometry& g = vol.geo();
  const uint64_t size = vol.info().size;
  FUZZ_CHECK(x.length > 0, path);
  FUZZ_CHECK(x.offset >= g.data_offset && x.offset <= size && x.length <= size - x.offset, path + ": extent outside the data area");
  // Every cluster of a file is allocated: a backup reads only those.
  const uint64_t first = (x.offset - g.data_offset) / g.cluster_size + 2;
  const uint64_t last = (x.offset + x.length - 1 - g.data_offset) / g.cluster_size + 2;
  for (uint64_t c = first; c <= last; c++) {
    FUZZ_CHECK(c >= 2 && c <= g.cluster_count + 1, path);
    FUZZ_CHECK(map.test(static_cast<uint32_t>(c)), path + ": cluster " + std::to_string(c) + " is free in the allocation map");
  }
}

void check_catalog(const std::vector<fat::CatalogFrame>& frames) {
  for (const fat::CatalogFrame& f : frames) {
    FUZZ_CHECK(!f.text.empty() && f.text.back() == '\n', "frame does not end a line");
    uint32_t lines = 0;
    for (char c : f.text) {
      if (c == '\n') lines++;
      else FUZZ_CHECK(static_cast<unsigned char>(c) >= 0x20, "control character in a catalog line");
    }
    FUZZ_CHECK(lines == f.entries, "entry count");
    FUZZ_CHECK(fuzz::valid_utf8(f.text), "catalog is not UTF-8");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::Input in;
  if (!fuzz::parse_input(data, size, &in)) return 0;
  fuzz::ZeroTailReader disk(in.image, in.disk_size);

  std::unique_ptr<fat::FatVolume> vol;
  try {
    vol = std::make_unique<fat::FatVolume>(disk, 0);
  } catch (const io::IoError&) {
    return 0;
  }
  const fat::FatGeometry& g = vol->geo();
  FUZZ_CHECK(g.data_offset < in.disk_size, "data area starts past the volume");
  FUZZ_CHECK(g.data_offset + static_cast<uint64_t>(g.cluster_count) * g.cluster_size <= in.disk_size, "clusters pass the volume");
  FUZZ_CHECK(g.fat_offset + static_cast<uint64_t>(g.num_fats) * g.fat_bytes <= g.data_offset, "FATs overlap the data area");

  fat::AllocationMap map;
  try {
    const int64_t diff = vol->compare_fats();
    FUZZ_CHECK(diff < 0 || static_cast<uint64_t>(diff) < g.data_offset, "FAT difference outside the FATs");
    map = vol->allocation_map();
  } catch (const io::IoError&) {
    return 0;
  }
  FUZZ_CHECK(map.used + map.free + map.bad == g.cluster_count, "allocation map counts");

  try {
    fat::WalkStats listing;
    vol->walk(&listing, false);
  } catch (const io::IoError&) {
  }

  std::vector<fat::DirEntry> entries;
  std::vector<std::vector<fat::Extent>> extents;
  fat::WalkStats st;
  try {
    entries = vol->walk(&st, true, &extents);
  } catch (const io::IoError&) {
    return 0;
  }
  FUZZ_CHECK(entries.size() == extents.size(), "one extent list per entry");
  FUZZ_CHECK(st.clusters_owned <= map.used, "more clusters owned than in use");
  std::unordered_set<std::string> excluded;
  for (size_t i = 0; i < entries.size(); i++) {
    const fat::DirEntry& e = entries[i];
    const std::string path = fat::entry_path(entries, i);
    FUZZ_CHECK(path.size() == e.path_bytes, path + ": path length differs from path_bytes");
    FUZZ_CHECK(fuzz::valid_utf8(path) && fuzz::valid_utf8(e.short_name), path);
    uint64_t total = 0;
    for (const fat::Extent& x : extents[i]) {
      check_extent(*vol, map, x, path);
      total += x.length;
    }
    FUZZ_CHECK(e.is_dir() ? total == 0 : total == e.size, path + ": extents do not add up to the size");
    if (i < 16 && (in.options >> i) & 1) excluded.insert(path);
  }
  check_catalog(fat::catalog_frames(entries, extents, 1, excluded, 4096));

  // Lookups by path of the first entries (names may repeat or hold '/': errors, not crashes).
  for (size_t i = 0; i < entries.size() && i < 32; i++) {
    const fat::DirEntry& e = entries[i];
    const std::string path = fat::entry_path(entries, i);
    try {
      fat::DirEntry s = vol->stat(path);
      if (s.is_dir()) {
        vol->list(path);
      } else {
        for (const fat::Extent& x : vol->file_extents(s)) check_extent(*vol, map, x, s.path);
      }
      if (e.first_cluster >= 2) vol->chain(e.first_cluster, path, e.offset);
    } catch (const io::IoError&) {
    }
  }
  return 0;
}
