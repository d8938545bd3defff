// FAT directory entries: 8.3 names, long names (LFN), volume label.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "fat/byte_reader.h"

namespace lowtide::fat {

constexpr uint8_t kAttrReadOnly = 0x01;
constexpr uint8_t kAttrHidden = 0x02;
constexpr uint8_t kAttrSystem = 0x04;
constexpr uint8_t kAttrVolumeId = 0x08;
constexpr uint8_t kAttrDirectory = 0x10;
constexpr uint8_t kAttrArchive = 0x20;
constexpr uint8_t kAttrLongName = 0x0F;

constexpr size_t kDirEntrySize = 32;
constexpr uint32_t kMaxDirEntries = 65536;  // a directory holds at most 65536 slots (2 MiB)

struct DirEntry {
  std::string name;        // long name if valid, else the 8.3 name (UTF-8)
  std::string short_name;  // "NAME.EXT" as stored (OEM code page 850 -> UTF-8)
  // Full path from the volume root ("/a/b"), set by FatVolume::list, stat and
  // read_dir; empty in a walk's entries, which link to their parent instead
  // (entry_path() builds the path), so a walk holds each name once.
  std::string path;
  uint8_t attr = 0;
  uint32_t first_cluster = 0;
  uint32_t size = 0;
  uint16_t create_date = 0, create_time = 0;
  uint8_t create_tenths = 0;
  uint16_t access_date = 0;
  uint16_t modify_date = 0, modify_time = 0;
  uint64_t offset = 0;      // source byte offset of the 8.3 entry
  uint64_t lfn_offset = 0;  // source byte offset of the first LFN slot (== offset when none)
  uint32_t lfn_slots = 0;   // LFN slots belonging to this entry
  // In a walk: index of the parent directory's entry in the walk's result,
  // kNoParent for entries of the root; path_bytes is the length of the path.
  uint32_t parent = UINT32_MAX;
  uint32_t path_bytes = 0;
  // Why `name` is not the name as stored: a long name or 8.3 name holding '/',
  // NUL or a control character, or "." / "..", was escaped (each such byte as
  // %XX) or dropped for the 8.3 name. Empty when the name is as stored.
  std::string unsafe;
  bool is_dir() const { return (attr & kAttrDirectory) != 0; }
};

// Parses 32-byte directory slots fed in on-disk order (across clusters).
class DirParser {
 public:
  DirParser(bool is_root, bool fat32) : is_root_(is_root), fat32_(fat32) {}

  // Feeds one slot found at source byte offset `offset`. Returns false once
  // the end-of-directory marker (first byte 0) has been seen.
  bool feed(const uint8_t* slot, uint64_t offset);
  bool ended() const { return ended_; }

  std::vector<DirEntry> entries;
  std::optional<std::string> label;  // root directory volume label
  uint32_t orphan_lfn = 0;           // LFN runs with a bad sequence or checksum (ignored)
  uint32_t deleted = 0;              // deleted 8.3 entries seen
  uint32_t slots = 0;

 private:
  void drop_pending();

  bool is_root_;
  bool fat32_;
  bool ended_ = false;
  // Pending long name.
  bool pending_ = false;
  uint32_t lfn_total_ = 0, lfn_expect_ = 0, lfn_seen_ = 0;
  uint8_t lfn_sum_ = 0;
  uint64_t lfn_first_offset_ = 0;
  uint16_t lfn_units_[20 * 13] = {};
};

// LFN checksum of an 11-byte 8.3 name as stored.
uint8_t lfn_checksum(const uint8_t* name11);

std::string oem_to_utf8(const uint8_t* p, size_t n);

// Why `name` (UTF-8) cannot be a path component, or "" when it can: it holds
// '/', NUL or a control character (U+0001..U+001F, U+007F), or is "." or "..".
std::string unsafe_name_reason(const std::string& name);

// `name` with every '/', NUL and control character as %XX, and "." / ".."
// as "%2E" / "%2E%2E": always a usable path component.
std::string escape_name(const std::string& name);

}  // namespace lowtide::fat
