// Partition tables: MBR with extended/logical chains, GPT (primary and
// backup), superfloppies, file-system detection, then each FAT partition
// opened and listed the way openVolume() opens it (a window of the disk).
//
// Options (fuzz/fuzz_input.h): bit 0 set leaves GPT CRCs as the input has
// them; clear, the harness first recomputes the CRC32 of every GPT header
// and entry array it finds, so that mutations get past the checksums.
#include <cstdint>
#include <vector>

#include "fat/volume.h"
#include "fuzz_input.h"
#include "part/partition.h"

namespace {

using lowtide::fuzz::Input;
using lowtide::fuzz::le32;
using lowtide::fuzz::ZeroTailReader;

void put32(std::vector<uint8_t>& b, size_t off, uint32_t v) {
  for (int i = 0; i < 4; i++) b[off + i] = static_cast<uint8_t>(v >> (8 * i));
}

uint64_t le64(const uint8_t* p) { return le32(p) | (static_cast<uint64_t>(le32(p + 4)) << 32); }

// Recomputes the entry-array and header CRCs of a GPT header at `lba` when it
// lies inside the image bytes (sector size `ss`).
void fix_gpt_crcs(Input& in, ZeroTailReader& disk, uint32_t ss, uint64_t lba) {
  std::vector<uint8_t>& img = in.image;
  const uint64_t off = lba * ss;
  if (off >= img.size() || img.size() - off < ss) return;
  uint8_t* h = img.data() + off;
  if (std::memcmp(h, "EFI PART", 8) != 0) return;
  const uint32_t hsize = le32(h + 12);
  if (hsize < 92 || hsize > ss) return;
  const uint64_t entries_lba = le64(h + 72);
  const uint32_t count = le32(h + 80), esize = le32(h + 84);
  const uint64_t ebytes = static_cast<uint64_t>(count) * esize;
  const uint64_t sectors = in.disk_size / ss;
  if (esize >= 128 && ebytes > 0 && ebytes <= (16u << 20) && entries_lba < sectors && ebytes <= (sectors - entries_lba) * ss) {
    std::vector<uint8_t> entries(static_cast<size_t>(ebytes));
    disk.read(entries_lba * ss, entries.data(), entries.size());
    put32(img, static_cast<size_t>(off + 88), lowtide::part::crc32(entries.data(), entries.size()));
  }
  put32(img, static_cast<size_t>(off + 16), 0);
  put32(img, static_cast<size_t>(off + 16), lowtide::part::crc32(h, hsize));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace lowtide;
  Input in;
  if (!fuzz::parse_input(data, size, &in)) return 0;
  ZeroTailReader disk(in.image, in.disk_size);
  if ((in.options & 1) == 0) {
    for (uint32_t ss : {512u, 4096u}) {
      fix_gpt_crcs(in, disk, ss, 1);
      if (in.disk_size / ss >= 1) fix_gpt_crcs(in, disk, ss, in.disk_size / ss - 1);
    }
  }

  part::PartitionTable t;
  try {
    t = part::read_partition_table(disk);
  } catch (const io::IoError&) {
    return 0;
  }
  FUZZ_CHECK(t.disk_size == in.disk_size, "disk size");
  FUZZ_CHECK(t.sector_size == 512 || t.sector_size == 4096, std::to_string(t.sector_size));
  for (const part::Partition& p : t.partitions) {
    FUZZ_CHECK(fuzz::valid_utf8(p.name), "partition name is not UTF-8");
    if (!p.truncated) FUZZ_CHECK(p.start <= t.disk_size && p.size <= t.disk_size - p.start, "an untruncated partition passes the end");
    if (p.fs.rfind("fat", 0) != 0 || p.start >= t.disk_size) continue;
    // As openVolume(path, { partition }) does: a window cut to the disk.
    const uint64_t len = std::min<uint64_t>(p.size, t.disk_size - p.start);
    fat::WindowReader window(disk, p.start, len);
    try {
      fat::FatVolume vol(window, p.start);
      FUZZ_CHECK(vol.geo().data_offset < len, "data area outside the partition");
      fat::WalkStats stats;
      vol.walk(&stats, false);
    } catch (const io::IoError&) {
    }
  }
  return 0;
}
