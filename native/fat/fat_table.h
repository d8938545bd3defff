// FAT entry access (one small table of operations per width), an on-demand
// cached view of one FAT copy, and the allocation map.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <vector>

#include "fat/boot_sector.h"
#include "fat/byte_reader.h"

namespace lowtide::fat {

struct MapCounts {
  uint64_t free = 0;
  uint64_t bad = 0;
};

// Per-width behaviour, chosen once when a volume is opened.
struct FatOps {
  FatType type;
  uint32_t entry_bits;  // 12, 16, 32
  uint32_t bad;         // bad-cluster marker
  uint32_t eoc_min;     // values >= this end a chain
  // Byte offset of entry `n` inside the FAT.
  uint64_t (*entry_offset)(uint32_t n);
  // Value of entry `n` given `p` = the FAT bytes starting at entry_offset(n)
  // (at least 2 bytes for FAT12/16, 4 for FAT32 must be readable).
  uint32_t (*decode)(const uint8_t* p, uint32_t n);
  // Stores `value` as entry `n` into `p` = the FAT bytes at entry_offset(n)
  // (entry_bytes of them), keeping the bits that belong to the neighbouring
  // FAT12 entry and FAT32's reserved top four bits.
  void (*encode)(uint8_t* p, uint32_t n, uint32_t value);
  uint32_t entry_bytes;  // bytes spanned by one entry: 2 (FAT12/16) or 4
  // Hot loop: bits [bit_begin, bit_end) of the allocation map (bit j is
  // cluster j + 2; bit_begin is a multiple of 64) from a buffer holding the
  // FAT from entry `buf_first` (even) on. ORs into `words`, counts free and bad.
  void (*map_range)(const uint8_t* buf, uint32_t buf_first, uint32_t bit_begin, uint32_t bit_end, uint64_t* words, MapCounts* counts);
};

const FatOps& fat_ops(FatType t);

// Bytes of the FAT that hold entries 0 .. cluster_count + 1.
uint64_t fat_bytes_needed(const FatGeometry& g);

// Random access to the entries of one FAT copy, read on demand in 64 KiB
// pages through a small direct-mapped cache (bounded memory).
class FatTable {
 public:
  // `base` is the volume's offset on the source (for error offsets only).
  FatTable(ByteReader& reader, const FatGeometry& g, uint32_t copy, uint64_t base);

  // Entry of cluster `n` (0 .. cluster_count + 1).
  uint32_t get(uint32_t n);
  const FatOps& ops() const { return ops_; }
  // Absolute byte offset on the source of entry `n` (for messages).
  uint64_t entry_source_offset(uint32_t n) const { return base_ + fat_start_ + ops_.entry_offset(n); }

 private:
  static constexpr uint32_t kPageBits = 16;
  static constexpr uint32_t kSlots = 256;  // at most 16 MiB cached
  struct Slot {
    uint64_t page = UINT64_MAX;
    std::unique_ptr<uint8_t[]> data;
  };

  ByteReader& reader_;
  const FatOps& ops_;
  uint32_t max_entry_;
  uint64_t fat_start_;
  uint64_t needed_;
  uint64_t base_;
  std::vector<Slot> slots_;
};

// Which clusters are in use: bit (c - 2) is set when FAT entry c is neither
// free (0) nor the bad-cluster marker. Entries past the cluster count are ignored.
struct AllocationMap {
  std::vector<uint64_t> words;  // ceil(cluster_count / 64) little-endian words
  uint32_t cluster_count = 0;
  uint64_t used = 0;
  uint64_t free = 0;
  uint64_t bad = 0;

  bool test(uint32_t cluster) const {
    uint32_t j = cluster - 2;
    return (words[j >> 6] >> (j & 63)) & 1;
  }
};

// Streams FAT copy `copy` in large chunks; reads only the bytes that hold
// entries 0 .. cluster_count + 1.
AllocationMap build_allocation_map(ByteReader& reader, const FatGeometry& g, uint32_t copy);

// Compares every FAT copy with copy 0 over the bytes that hold entries;
// returns the byte offset (volume-relative) of the first difference, or -1.
int64_t compare_fat_copies(ByteReader& reader, const FatGeometry& g);

}  // namespace lowtide::fat
