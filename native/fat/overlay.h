// A copy-on-write overlay of a ByteReader at sector granularity. Plain C++:
// no Node-API types.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>

#include "fat/byte_reader.h"

namespace lowtide::fat {

// Writes go to private copies of the sectors they touch (loaded from the
// inner reader on first touch); reads return the modified bytes of overlaid
// sectors and the inner reader's bytes everywhere else. The inner reader is
// never written. Offsets are those of the inner reader.
class OverlayReader final : public ByteReader {
 public:
  OverlayReader(ByteReader& inner, uint32_t sector_size);

  uint64_t size() const override { return inner_.size(); }
  void read(uint64_t offset, uint8_t* dst, size_t len) override;

  // Copies `len` bytes into the overlay at `offset` (read-modify-write of
  // every sector touched). Throws OUT_OF_RANGE for a sector past the end.
  void write(uint64_t offset, const uint8_t* src, size_t len);

  // Mutable bytes [offset, offset + len) when they lie inside one sector
  // (loaded into the overlay if needed); nullptr when they straddle two.
  uint8_t* span(uint64_t offset, size_t len);

  uint32_t sector_size() const { return sector_size_; }
  // The overlaid sectors by sector index (offset / sector_size), ascending.
  const std::map<uint64_t, std::unique_ptr<uint8_t[]>>& sectors() const { return sectors_; }

 private:
  uint8_t* sector(uint64_t index);

  ByteReader& inner_;
  uint32_t sector_size_;
  std::map<uint64_t, std::unique_ptr<uint8_t[]>> sectors_;
  uint64_t last_index_ = UINT64_MAX;  // one-entry lookup cache (FAT runs touch one sector many times)
  uint8_t* last_ = nullptr;
};

}  // namespace lowtide::fat
