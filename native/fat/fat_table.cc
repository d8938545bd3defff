#include "fat/fat_table.h"

#include <algorithm>
#include <cstring>

namespace lowtide::fat {
namespace {

struct W12 {
  static constexpr FatType type = FatType::Fat12;
  static constexpr uint32_t bits = 12, bad = 0xFF7, eoc = 0xFF8;
  static uint64_t off(uint32_t n) { return static_cast<uint64_t>(n) * 3 / 2; }
  static uint32_t dec(const uint8_t* p, uint32_t n) {
    uint32_t v = load_le16(p);
    return (n & 1) ? (v >> 4) : (v & 0xFFF);
  }
  static void enc(uint8_t* p, uint32_t n, uint32_t value) {
    uint32_t v = load_le16(p);
    v = (n & 1) ? ((v & 0x000F) | ((value & 0xFFF) << 4)) : ((v & 0xF000) | (value & 0xFFF));
    p[0] = static_cast<uint8_t>(v);
    p[1] = static_cast<uint8_t>(v >> 8);
  }
  static constexpr uint32_t bytes = 2;
};
struct W16 {
  static constexpr FatType type = FatType::Fat16;
  static constexpr uint32_t bits = 16, bad = 0xFFF7, eoc = 0xFFF8;
  static uint64_t off(uint32_t n) { return static_cast<uint64_t>(n) * 2; }
  static uint32_t dec(const uint8_t* p, uint32_t) { return load_le16(p); }
  static void enc(uint8_t* p, uint32_t, uint32_t value) {
    p[0] = static_cast<uint8_t>(value);
    p[1] = static_cast<uint8_t>(value >> 8);
  }
  static constexpr uint32_t bytes = 2;
};
struct W32 {
  static constexpr FatType type = FatType::Fat32;
  static constexpr uint32_t bits = 32, bad = 0x0FFFFFF7, eoc = 0x0FFFFFF8;
  static uint64_t off(uint32_t n) { return static_cast<uint64_t>(n) * 4; }
  static uint32_t dec(const uint8_t* p, uint32_t) { return load_le32(p) & 0x0FFFFFFF; }
  static void enc(uint8_t* p, uint32_t, uint32_t value) {
    uint32_t v = (load_le32(p) & 0xF0000000u) | (value & 0x0FFFFFFFu);
    for (int i = 0; i < 4; i++) p[i] = static_cast<uint8_t>(v >> (8 * i));
  }
  static constexpr uint32_t bytes = 4;
};

template <class W>
void map_range_t(const uint8_t* buf, uint32_t buf_first, uint32_t bit_begin, uint32_t bit_end, uint64_t* words, MapCounts* counts) {
  const uint8_t* origin = buf - W::off(buf_first);  // never dereferenced below entry buf_first
  uint64_t free = 0, bad = 0;
  uint32_t j = bit_begin;
  // Whole words: a fixed trip count the compiler can unroll.
  for (; j + 64 <= bit_end; j += 64) {
    uint64_t word = 0;
    for (uint32_t k = 0; k < 64; k++) {
      uint32_t n = j + k + 2;
      uint32_t v = W::dec(origin + W::off(n), n);
      free += v == 0;
      bad += v == W::bad;
      word |= static_cast<uint64_t>((v != 0) & (v != W::bad)) << k;
    }
    words[j >> 6] = word;
  }
  if (j < bit_end) {
    uint64_t word = 0;
    for (uint32_t k = 0; j + k < bit_end; k++) {
      uint32_t n = j + k + 2;
      uint32_t v = W::dec(origin + W::off(n), n);
      free += v == 0;
      bad += v == W::bad;
      word |= static_cast<uint64_t>((v != 0) & (v != W::bad)) << k;
    }
    words[j >> 6] = word;
  }
  counts->free += free;
  counts->bad += bad;
}

template <class W>
constexpr FatOps make_ops() {
  return FatOps{W::type, W::bits, W::bad, W::eoc, &W::off, &W::dec, &W::enc, W::bytes, &map_range_t<W>};
}

constexpr FatOps kOps12 = make_ops<W12>();
constexpr FatOps kOps16 = make_ops<W16>();
constexpr FatOps kOps32 = make_ops<W32>();

}  // namespace

const FatOps& fat_ops(FatType t) {
  switch (t) {
    case FatType::Fat12: return kOps12;
    case FatType::Fat16: return kOps16;
    case FatType::Fat32: break;
  }
  return kOps32;
}

uint64_t fat_bytes_needed(const FatGeometry& g) {
  return ((static_cast<uint64_t>(g.cluster_count) + 2) * static_cast<uint64_t>(g.type) + 7) / 8;
}

FatTable::FatTable(ByteReader& reader, const FatGeometry& g, uint32_t copy, uint64_t base)
    : reader_(reader),
      ops_(fat_ops(g.type)),
      max_entry_(g.cluster_count + 1),
      fat_start_(g.fat_offset + static_cast<uint64_t>(copy) * g.fat_bytes),
      needed_(fat_bytes_needed(g)),
      base_(base),
      slots_(kSlots) {}

uint32_t FatTable::get(uint32_t n) {
  if (n > max_entry_)
    corrupt("FAT_CORRUPT", "FAT", entry_source_offset(n), "entry " + std::to_string(n) + " is past the last cluster");
  uint64_t off = ops_.entry_offset(n);
  uint64_t page = off >> kPageBits;
  Slot& s = slots_[page % kSlots];
  if (s.page != page) {
    uint64_t start = page << kPageBits;
    uint64_t len = std::min<uint64_t>(uint64_t(1) << kPageBits, needed_ - start);
    if (!s.data) s.data.reset(new uint8_t[(size_t(1) << kPageBits) + 4]);
    s.page = UINT64_MAX;
    reader_.read(fat_start_ + start, s.data.get(), static_cast<size_t>(len));
    std::memset(s.data.get() + len, 0, (size_t(1) << kPageBits) + 4 - len);
    s.page = page;
  }
  return ops_.decode(s.data.get() + (off - (page << kPageBits)), n);
}

AllocationMap build_allocation_map(ByteReader& reader, const FatGeometry& g, uint32_t copy) {
  const FatOps& ops = fat_ops(g.type);
  AllocationMap m;
  m.cluster_count = g.cluster_count;
  m.words.assign((static_cast<size_t>(g.cluster_count) + 63) / 64, 0);
  const uint64_t fat_start = g.fat_offset + static_cast<uint64_t>(copy) * g.fat_bytes;
  const uint64_t needed = fat_bytes_needed(g);
  // Chunks of 1 Mi entries (a multiple of 64 map bits; 4 MiB of FAT32).
  constexpr uint32_t kChunkBits = 1u << 20;
  std::vector<uint8_t> buf;
  MapCounts counts;
  for (uint32_t j = 0; j < g.cluster_count;) {
    uint32_t jend = static_cast<uint32_t>(std::min<uint64_t>(uint64_t(j) + kChunkBits, g.cluster_count));
    uint32_t first = j + 2;  // even, since j is a multiple of 64
    uint64_t from = ops.entry_offset(first);
    uint64_t to = std::min<uint64_t>(ops.entry_offset(jend + 2) + 2, needed);  // +2: FAT12 entries straddle bytes
    size_t len = static_cast<size_t>(to - from);
    buf.resize(len + 4);
    reader.read(fat_start + from, buf.data(), len);
    std::memset(buf.data() + len, 0, 4);
    ops.map_range(buf.data(), first, j, jend, m.words.data(), &counts);
    j = jend;
  }
  m.free = counts.free;
  m.bad = counts.bad;
  m.used = g.cluster_count - counts.free - counts.bad;
  return m;
}

int64_t compare_fat_copies(ByteReader& reader, const FatGeometry& g) {
  const uint64_t needed = fat_bytes_needed(g);
  const size_t kChunk = static_cast<size_t>(std::min<uint64_t>(1 << 20, needed));  // a small FAT: small buffers
  std::vector<uint8_t> a(kChunk), b(kChunk);
  for (uint32_t copy = 1; copy < g.num_fats; copy++) {
    for (uint64_t off = 0; off < needed; off += kChunk) {
      size_t len = static_cast<size_t>(std::min<uint64_t>(kChunk, needed - off));
      reader.read(g.fat_offset + off, a.data(), len);
      reader.read(g.fat_offset + copy * g.fat_bytes + off, b.data(), len);
      if (std::memcmp(a.data(), b.data(), len) != 0) {
        size_t i = 0;
        while (a[i] == b[i]) i++;
        return static_cast<int64_t>(g.fat_offset + copy * g.fat_bytes + off + i);
      }
    }
  }
  return -1;
}

}  // namespace lowtide::fat
