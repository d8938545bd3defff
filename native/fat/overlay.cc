#include "fat/overlay.h"

#include <algorithm>
#include <cstring>
#include <string>

namespace lowtide::fat {

OverlayReader::OverlayReader(ByteReader& inner, uint32_t sector_size) : inner_(inner), sector_size_(sector_size) {
  if (sector_size == 0) throw io::IoError("INTERNAL", "overlay sector size is 0");
}

void OverlayReader::read(uint64_t offset, uint8_t* dst, size_t len) {
  // Inside one overlaid sector: no need to read the inner reader at all.
  if (len > 0 && offset % sector_size_ + len <= sector_size_) {
    auto it = sectors_.find(offset / sector_size_);
    if (it != sectors_.end()) {
      std::memcpy(dst, it->second.get() + offset % sector_size_, len);
      return;
    }
  }
  inner_.read(offset, dst, len);  // also checks the range
  if (len == 0 || sectors_.empty()) return;
  const uint64_t end = offset + len;
  for (auto it = sectors_.lower_bound(offset / sector_size_); it != sectors_.end(); ++it) {
    const uint64_t s_begin = it->first * sector_size_;
    if (s_begin >= end) break;
    const uint64_t from = std::max(s_begin, offset);
    const uint64_t to = std::min(s_begin + sector_size_, end);
    std::memcpy(dst + (from - offset), it->second.get() + (from - s_begin), static_cast<size_t>(to - from));
  }
}

uint8_t* OverlayReader::sector(uint64_t index) {
  if (index == last_index_) return last_;
  auto it = sectors_.find(index);
  if (it == sectors_.end()) {
    const uint64_t off = index * sector_size_;
    if (off >= inner_.size() || inner_.size() - off < sector_size_)
      throw io::IoError("OUT_OF_RANGE",
                        "overlay write to sector " + std::to_string(index) + " (byte offset " + std::to_string(off) +
                            ") passes the end of the volume",
                        0, static_cast<int64_t>(off));
    auto data = std::make_unique<uint8_t[]>(sector_size_);
    inner_.read(off, data.get(), sector_size_);
    it = sectors_.emplace(index, std::move(data)).first;
  }
  last_index_ = index;
  last_ = it->second.get();
  return last_;
}

uint8_t* OverlayReader::span(uint64_t offset, size_t len) {
  const size_t within = static_cast<size_t>(offset % sector_size_);
  if (len == 0 || within + len > sector_size_) return nullptr;
  return sector(offset / sector_size_) + within;
}

void OverlayReader::write(uint64_t offset, const uint8_t* src, size_t len) {
  size_t done = 0;
  while (done < len) {
    const uint64_t at = offset + done;
    const uint64_t index = at / sector_size_;
    const size_t within = static_cast<size_t>(at % sector_size_);
    const size_t n = std::min(len - done, static_cast<size_t>(sector_size_) - within);
    std::memcpy(sector(index) + within, src + done, n);
    done += n;
  }
}

}  // namespace lowtide::fat
