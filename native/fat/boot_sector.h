// FAT boot sector / BPB: parsing and validation of every derived value.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace lowtide::fat {

enum class FatType : uint8_t { Fat12 = 12, Fat16 = 16, Fat32 = 32 };

// Limits from the Microsoft FAT specification (cluster counts).
constexpr uint32_t kFat12MaxClusters = 4084;   // < 4085 clusters is FAT12
constexpr uint32_t kFat16MaxClusters = 65524;  // < 65525 clusters is FAT16
constexpr uint32_t kFat32MaxClusters = 0x0FFFFFF5;

// Everything derived from the boot sector; all values validated.
struct FatGeometry {
  FatType type = FatType::Fat12;
  uint32_t bytes_per_sector = 0;
  uint32_t sectors_per_cluster = 0;
  uint32_t cluster_size = 0;  // bytes
  uint32_t reserved_sectors = 0;
  uint32_t num_fats = 0;
  uint32_t root_entries = 0;  // FAT12/16 only
  uint64_t total_sectors = 0;
  uint32_t fat_sectors = 0;         // length of one FAT in sectors
  uint32_t cluster_count = 0;       // data clusters: numbered 2 .. cluster_count + 1
  uint64_t fat_offset = 0;          // byte offset of FAT #0 in the volume
  uint64_t fat_bytes = 0;           // bytes of one FAT (fat_sectors * bytes_per_sector)
  uint64_t root_dir_offset = 0;     // FAT12/16: byte offset of the fixed root directory
  uint32_t root_dir_bytes = 0;      // FAT12/16: its size
  uint64_t data_offset = 0;         // byte offset of cluster 2
  uint32_t root_cluster = 0;        // FAT32 only
  uint32_t fsinfo_sector = 0;       // FAT32: 0 when none
  uint32_t backup_boot_sector = 0;  // FAT32: 0 when none
  uint16_t ext_flags = 0;           // FAT32 BPB_ExtFlags
  bool mirroring = true;            // FAT32: false when only `active_fat` is in use
  uint32_t active_fat = 0;          // the FAT copy to read
  uint8_t media = 0;
  uint32_t hidden_sectors = 0;
  bool boot_dirty = false;  // "dirty" bit in the boot sector's reserved byte
  bool has_ext_boot_sig = false;
  uint32_t volume_id = 0;
  std::string oem_name;         // 8 bytes, trailing spaces trimmed
  std::string bpb_label;        // 11 bytes, trailing spaces trimmed (ext. boot signature only)
  std::string fs_type_label;    // "FAT12   " etc, trimmed
  bool boot_signature = false;  // 0x55AA at 510
  std::vector<std::string> warnings;
};

// Parses and validates a boot sector. `p`/`n` are the first bytes of the
// volume (at least 512), `volume_size` the bytes available for the volume,
// `base` its offset on the source (for error offsets). Throws io::IoError
// FAT_CORRUPT naming the field and its byte offset.
FatGeometry parse_boot_sector(const uint8_t* p, size_t n, uint64_t volume_size, uint64_t base);

// True if the sector starts like a FAT boot sector (jump instruction) and its
// BPB validates against `volume_size` (UINT64_MAX: no size check); used for
// file-system detection. Never throws.
bool looks_like_fat(const uint8_t* p, size_t n, uint64_t volume_size, FatType* type);

const char* fat_type_name(FatType t);

}  // namespace lowtide::fat
