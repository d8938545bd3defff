#include "fat/boot_sector.h"

#include <bit>

#include "fat/byte_reader.h"

namespace lowtide::fat {
namespace {

constexpr const char* kCorrupt = "FAT_CORRUPT";

std::string trimmed(const uint8_t* p, size_t n) {
  std::string s;
  for (size_t i = 0; i < n; i++) s.push_back(p[i] >= 0x20 && p[i] < 0x7F ? static_cast<char>(p[i]) : '?');
  while (!s.empty() && s.back() == ' ') s.pop_back();
  return s;
}

bool pow2(uint32_t v) { return v != 0 && std::has_single_bit(v); }

std::string hex8(unsigned v) {
  const char* d = "0123456789ABCDEF";
  return std::string("0x") + d[(v >> 4) & 15] + d[v & 15];
}

}  // namespace

const char* fat_type_name(FatType t) {
  switch (t) {
    case FatType::Fat12: return "fat12";
    case FatType::Fat16: return "fat16";
    case FatType::Fat32: return "fat32";
  }
  return "fat";
}

FatGeometry parse_boot_sector(const uint8_t* p, size_t n, uint64_t volume_size, uint64_t base) {
  Bytes b(p, n, base, kCorrupt, "FAT boot sector");
  FatGeometry g;
  if (n < 512) b.fail(0, "the volume is smaller than one boot sector (" + std::to_string(n) + " bytes)");

  g.boot_signature = b.u8(510) == 0x55 && b.u8(511) == 0xAA;
  if (!g.boot_signature) g.warnings.push_back("boot sector has no 0x55AA signature");
  g.oem_name = trimmed(b.at(3, 8), 8);

  // BPB_BytsPerSec: a power of two from 512 to 4096.
  g.bytes_per_sector = b.u16(0x0B);
  if (!pow2(g.bytes_per_sector) || g.bytes_per_sector < 512 || g.bytes_per_sector > 4096)
    b.fail(0x0B, "bytes per sector " + std::to_string(g.bytes_per_sector) + " is not a power of two from 512 to 4096");
  // BPB_SecPerClus: a power of two from 1 to 128.
  g.sectors_per_cluster = b.u8(0x0D);
  if (!pow2(g.sectors_per_cluster))
    b.fail(0x0D, "sectors per cluster " + std::to_string(g.sectors_per_cluster) + " is not a power of two");
  g.cluster_size = g.bytes_per_sector * g.sectors_per_cluster;
  // BPB_RsvdSecCnt >= 1 (the boot sector itself).
  g.reserved_sectors = b.u16(0x0E);
  if (g.reserved_sectors == 0) b.fail(0x0E, "reserved sector count is 0");
  // BPB_NumFATs >= 1.
  g.num_fats = b.u8(0x10);
  if (g.num_fats == 0) b.fail(0x10, "number of FATs is 0");
  if (g.num_fats > 16) b.fail(0x10, "number of FATs " + std::to_string(g.num_fats) + " is implausible (more than 16)");
  g.root_entries = b.u16(0x11);
  uint32_t total16 = b.u16(0x13);
  g.media = b.u8(0x15);
  if (g.media != 0xF0 && g.media < 0xF8) g.warnings.push_back("media descriptor " + hex8(g.media) + " is invalid");
  uint32_t fat16_len = b.u16(0x16);
  g.hidden_sectors = b.u32(0x1C);
  uint32_t total32 = b.u32(0x20);
  g.total_sectors = total16 != 0 ? total16 : total32;
  if (total16 != 0 && total32 != 0 && total16 != total32)
    g.warnings.push_back("both 16- and 32-bit total sector counts are set and differ; using the 16-bit one");
  if (g.total_sectors == 0) b.fail(total16 == 0 ? 0x20 : 0x13, "total sector count is 0");

  bool fat32_layout = fat16_len == 0;
  size_t ext;  // offset of the extended BPB fields (drive number)
  if (fat32_layout) {
    g.fat_sectors = b.u32(0x24);
    if (g.fat_sectors == 0) b.fail(0x24, "FAT length is 0");
    g.ext_flags = b.u16(0x28);
    uint16_t version = b.u16(0x2A);
    if (version != 0) b.fail(0x2A, "unsupported FAT32 version " + std::to_string(version >> 8) + "." + std::to_string(version & 0xFF));
    g.root_cluster = b.u32(0x2C);
    g.fsinfo_sector = b.u16(0x30);
    g.backup_boot_sector = b.u16(0x32);
    if (g.root_entries != 0) b.fail(0x11, "FAT32 volume has " + std::to_string(g.root_entries) + " fixed root entries (must be 0)");
    // mkfs.fat itself writes small FAT32 volumes' size in the 16-bit field; Linux accepts it.
    if (total16 != 0) g.warnings.push_back("FAT32 volume uses the 16-bit total sector count");
    ext = 0x40;
  } else {
    g.fat_sectors = fat16_len;
    if (g.root_entries == 0) b.fail(0x11, "FAT12/16 volume has no root directory entries");
    if ((static_cast<uint64_t>(g.root_entries) * 32) % g.bytes_per_sector != 0)
      g.warnings.push_back("root directory does not span an integral number of sectors");
    ext = 0x24;
  }
  g.boot_dirty = (b.u8(ext + 1) & 0x01) != 0;
  g.has_ext_boot_sig = b.u8(ext + 2) == 0x29;
  if (g.has_ext_boot_sig) {
    g.volume_id = b.u32(ext + 3);
    g.bpb_label = trimmed(b.at(ext + 7, 11), 11);
    g.fs_type_label = trimmed(b.at(ext + 18, 8), 8);
  }

  // Derived layout, in 64-bit arithmetic (no overflow: every factor < 2^32).
  const uint64_t bps = g.bytes_per_sector;
  uint64_t root_dir_sectors = (static_cast<uint64_t>(g.root_entries) * 32 + bps - 1) / bps;
  uint64_t fats_sectors = static_cast<uint64_t>(g.num_fats) * g.fat_sectors;
  uint64_t data_start = g.reserved_sectors + fats_sectors + root_dir_sectors;
  if (g.total_sectors * bps > volume_size)
    b.fail(g.total_sectors == total16 ? 0x13 : 0x20, "total sectors " + std::to_string(g.total_sectors) + " x " + std::to_string(bps) +
                                                         " bytes exceed the volume size (" + std::to_string(volume_size) + " bytes)");
  if (data_start >= g.total_sectors)
    b.fail(fat32_layout ? 0x24 : 0x16, "reserved sectors, FATs and root directory (" + std::to_string(data_start) +
                                           " sectors) leave no room for data in " + std::to_string(g.total_sectors) + " sectors");
  uint64_t clusters = (g.total_sectors - data_start) / g.sectors_per_cluster;
  if (clusters == 0) b.fail(0x0D, "the volume has no data clusters");

  // The cluster count decides the FAT width (Microsoft FAT specification);
  // a FAT32 BPB with few clusters is accepted as FAT32, like Linux and dosfstools do.
  if (fat32_layout) {
    g.type = FatType::Fat32;
    if (clusters > kFat32MaxClusters) b.fail(0x20, std::to_string(clusters) + " clusters are too many for FAT32");
    if (clusters <= kFat16MaxClusters)
      g.warnings.push_back("FAT32 volume has only " + std::to_string(clusters) +
                           " clusters (fewer than the 65525 of the specification)");
  } else if (clusters <= kFat12MaxClusters) {
    g.type = FatType::Fat12;
  } else if (clusters <= kFat16MaxClusters) {
    g.type = FatType::Fat16;
  } else {
    b.fail(0x16, std::to_string(clusters) + " clusters are too many for FAT12/16 (the BPB has a 16-bit FAT length)");
  }
  g.cluster_count = static_cast<uint32_t>(clusters);

  // The FAT must hold an entry for every cluster (plus the two reserved ones).
  uint64_t bits = static_cast<uint64_t>(g.type);
  uint64_t needed = ((static_cast<uint64_t>(g.cluster_count) + 2) * bits + 7) / 8;
  g.fat_bytes = static_cast<uint64_t>(g.fat_sectors) * bps;
  if (g.fat_bytes < needed)
    b.fail(fat32_layout ? 0x24 : 0x16, "FAT of " + std::to_string(g.fat_sectors) + " sectors is too small for " +
                                           std::to_string(g.cluster_count) + " clusters (needs " + std::to_string(needed) + " bytes)");

  g.fat_offset = static_cast<uint64_t>(g.reserved_sectors) * bps;
  g.root_dir_offset = (g.reserved_sectors + fats_sectors) * bps;
  g.root_dir_bytes = static_cast<uint32_t>(root_dir_sectors * bps);
  g.data_offset = data_start * bps;

  if (g.type == FatType::Fat32) {
    if (g.root_cluster < 2 || g.root_cluster > g.cluster_count + 1)
      b.fail(0x2C,
             "root cluster " + std::to_string(g.root_cluster) + " is outside clusters 2.." + std::to_string(g.cluster_count + 1));
    if (g.fsinfo_sector == 0xFFFF) g.fsinfo_sector = 0;
    if (g.fsinfo_sector != 0 && g.fsinfo_sector >= g.reserved_sectors) {
      g.warnings.push_back("FSInfo sector " + std::to_string(g.fsinfo_sector) + " lies outside the reserved area; ignored");
      g.fsinfo_sector = 0;
    }
    if (g.backup_boot_sector == 0xFFFF) g.backup_boot_sector = 0;
    if (g.backup_boot_sector != 0 && g.backup_boot_sector >= g.reserved_sectors) {
      g.warnings.push_back("backup boot sector " + std::to_string(g.backup_boot_sector) + " lies outside the reserved area; ignored");
      g.backup_boot_sector = 0;
    }
    g.mirroring = (g.ext_flags & 0x80) == 0;
    g.active_fat = g.mirroring ? 0 : (g.ext_flags & 0x0F);
    if (g.active_fat >= g.num_fats)
      b.fail(0x28, "active FAT " + std::to_string(g.active_fat) + " does not exist (" + std::to_string(g.num_fats) + " FATs)");
  }
  return g;
}

bool looks_like_fat(const uint8_t* p, size_t n, uint64_t volume_size, FatType* type) {
  if (n < 512) return false;
  if (p[0] != 0xEB && p[0] != 0xE9) return false;  // x86 jump instruction
  try {
    FatGeometry g = parse_boot_sector(p, n, volume_size, 0);
    if (type) *type = g.type;
    return true;
  } catch (const io::IoError&) {
    return false;
  }
}

}  // namespace lowtide::fat
