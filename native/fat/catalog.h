// The backup catalog's JSON lines, built off the JS thread from a volume walk.
//
// One line per entry, in walk order, the same object the JS CatalogEntry
// describes (lib/repo/catalog.ts):
//   {"partition":P,"path":"/a/b","shortName":"B","size":N,"isDirectory":false,
//    "attributes":32,"modified":"2026-11-25T17:45:01.000Z","extents":[[o,l],...]}
// with "unsafeName":"why" after shortName when the name shown is not the name
// as stored (DirEntry::unsafe).
// `modified` is the FAT modification time read as local time (the C library's
// time zone, as TZ or /etc/localtime give it), 1980-01-01 00:00 local when
// unset or invalid; directories have size 0.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_set>
#include <vector>

#include "fat/dir.h"
#include "fat/volume.h"

namespace lowtide::fat {

struct CatalogFrame {
  std::string text;      // whole lines, each ending in '\n'
  uint32_t entries = 0;  // lines in `text`
};

// Splits the lines into frames of about `frame_bytes` (a frame ends at the
// first line end at or past it). Entries whose path, or a parent directory's
// path, is in `excluded` are left out.
std::vector<CatalogFrame> catalog_frames(const std::vector<DirEntry>& entries, const std::vector<std::vector<Extent>>& extents,
                                         uint32_t partition, const std::unordered_set<std::string>& excluded, size_t frame_bytes);

// `s` as a JSON string literal (quotes included), appended to `out`.
void append_json_string(std::string& out, const std::string& s);

// FAT date and time (local) as an ISO 8601 UTC instant with milliseconds.
std::string fat_time_iso(uint16_t date, uint16_t time);

}  // namespace lowtide::fat
