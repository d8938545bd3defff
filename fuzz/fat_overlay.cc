// The deletion planner behind --exclude: some of a volume's paths excluded,
// the plan checked, applied to a copy-on-write overlay of the disk and the
// result opened and walked again.
//
// Options (fuzz/fuzz_input.h): bit i (i < 16) excludes the listing's entry i
// (at least one is excluded); bit 16 names them in upper case (resolved by
// name, not matched during the walk); bit 17 adds a path that does not exist,
// bit 18 the root directory (both must be refused).
#include <algorithm>
#include <cstdint>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "fat/deletion.h"
#include "fat/overlay.h"
#include "fat/volume.h"
#include "fuzz_input.h"

namespace {

using namespace lowtide;

std::string upper(std::string s) {
  for (char& c : s)
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 32);
  return s;
}

std::vector<std::string> sorted_paths(const std::vector<fat::DirEntry>& entries) {
  std::vector<std::string> out;
  for (size_t i = 0; i < entries.size(); i++) out.push_back(fat::entry_path(entries, i));
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::Input in;
  if (!fuzz::parse_input(data, size, &in)) return 0;
  fuzz::ZeroTailReader disk(in.image, in.disk_size);

  std::unique_ptr<fat::FatVolume> vol;
  std::vector<fat::DirEntry> listing;
  try {
    vol = std::make_unique<fat::FatVolume>(disk, 0);
    fat::WalkStats st;
    listing = vol->walk(&st, false);
  } catch (const io::IoError&) {
    return 0;
  }
  if (listing.empty()) return 0;

  // Whether the volume is consistent (then the plan must keep it so).
  bool clean = false;
  std::vector<fat::DirEntry> before;
  fat::AllocationMap map_before;
  try {
    fat::WalkStats st;
    before = vol->walk(&st, true);
    map_before = vol->allocation_map();
    clean = true;
  } catch (const io::IoError&) {
  }

  std::vector<std::string> paths;
  for (size_t i = 0; i < listing.size() && i < 16; i++)
    if ((in.options >> i) & 1) {
      const std::string path = fat::entry_path(listing, i);
      paths.push_back(in.options & (1u << 16) ? upper(path) : path);
    }
  if (paths.empty()) paths.push_back(fat::entry_path(listing, 0));
  const bool bogus = (in.options & (3u << 17)) != 0;
  if (in.options & (1u << 17)) paths.push_back("/no such file \x01");
  if (in.options & (1u << 18)) paths.push_back("/./");

  fat::DeletionPlan plan;
  try {
    plan = fat::plan_deletion(*vol, disk, paths);
  } catch (const io::IoError&) {
    return 0;
  }
  FUZZ_CHECK(!bogus, "a missing path or the root was excluded without an error");

  const fat::FatGeometry& g = vol->geo();
  const uint32_t ss = plan.sector_size;
  FUZZ_CHECK(ss == g.bytes_per_sector, "sector size");
  FUZZ_CHECK(plan.write_data.size() == plan.write_offsets.size() * ss, "write data size");
  for (size_t i = 0; i < plan.write_offsets.size(); i++) {
    const uint64_t off = plan.write_offsets[i];
    FUZZ_CHECK(off % ss == 0 && off + ss <= in.disk_size, "write outside the volume");
    if (i > 0) FUZZ_CHECK(off > plan.write_offsets[i - 1], "writes not ascending");
  }
  for (const fat::Extent& r : plan.freed_runs)
    FUZZ_CHECK(r.length > 0 && r.offset >= g.data_offset && r.offset + r.length <= in.disk_size, "freed run outside the data area");
  if (!clean) return 0;

  FUZZ_CHECK(plan.map_after.free == map_before.free + plan.freed_clusters, "freed clusters do not add up");

  // The volume as an image built with the plan would hold it.
  fat::OverlayReader ov(disk, ss);
  for (size_t i = 0; i < plan.write_offsets.size(); i++) ov.write(plan.write_offsets[i], plan.write_data.data() + i * ss, ss);
  std::vector<fat::DirEntry> after;
  try {
    fat::FatVolume v2(ov, 0);
    fat::WalkStats st;
    after = v2.walk(&st, true);
    fat::AllocationMap m2 = v2.allocation_map();
    FUZZ_CHECK(m2.free == plan.map_after.free, "map after the plan");
  } catch (const io::IoError& e) {
    FUZZ_CHECK(false, std::string("the volume after the plan does not walk: ") + e.what());
  }
  std::vector<std::string> want = sorted_paths(before);
  std::vector<std::string> gone;
  for (const fat::ExcludedEntry& x : plan.excluded) gone.push_back(x.path);
  std::sort(gone.begin(), gone.end());
  std::vector<std::string> kept;
  std::set_difference(want.begin(), want.end(), gone.begin(), gone.end(), std::back_inserter(kept));
  FUZZ_CHECK(kept == sorted_paths(after), "the walk after the plan does not list exactly the kept entries");
  return 0;
}
