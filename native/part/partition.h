// MBR (primary, extended, logical) and GPT partition tables, "superfloppy"
// disks without a table, and file-system detection by signature.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "fat/byte_reader.h"

namespace lowtide::part {

using fat::ByteReader;

enum class TableKind { None, Mbr, Gpt };

struct Partition {
  uint32_t index = 0;     // Linux numbering: MBR 1-4 primary, 5+ logical; GPT entry slot + 1; 0 = whole disk
  uint64_t start = 0;     // bytes
  uint64_t size = 0;      // bytes
  uint32_t mbr_type = 0;  // MBR type byte (MBR only)
  bool bootable = false;  // MBR status 0x80
  bool extended = false;  // an MBR extended container (holds logical partitions)
  bool logical = false;
  std::string type_guid;    // GPT only, e.g. "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
  std::string unique_guid;  // GPT only
  uint64_t attributes = 0;  // GPT only
  std::string name;         // GPT partition name (UTF-8)
  std::string type_name;    // friendly name of the type, "" if unknown
  std::string fs;           // detected file system: fat12/fat16/fat32/ntfs/exfat/ext/xfs/btrfs/unknown
  bool truncated = false;   // reaches past the end of the disk
};

struct PartitionTable {
  TableKind kind = TableKind::None;
  uint32_t sector_size = 512;
  uint64_t disk_size = 0;
  std::string disk_guid;       // GPT
  uint32_t mbr_signature = 0;  // MBR disk identifier
  bool gpt_backup_used = false;
  std::vector<Partition> partitions;
  std::vector<std::string> warnings;
};

// Reads the table of the disk behind `reader` (offsets from the disk start).
// Throws io::IoError PARTITION_CORRUPT when a table is present but
// inconsistent beyond use (e.g. protective MBR without any valid GPT, EBR loop).
PartitionTable read_partition_table(ByteReader& reader);

// Detects the file system at [start, start + size) of the reader. Never throws
// for content; I/O errors propagate.
std::string detect_fs(ByteReader& reader, uint64_t start, uint64_t size);

uint32_t crc32(const uint8_t* p, size_t n);
std::string format_guid(const uint8_t* p);
const char* kind_name(TableKind k);

}  // namespace lowtide::part
