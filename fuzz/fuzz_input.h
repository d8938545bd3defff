// What the harnesses share: the input format and an in-memory disk.
//
// An input is an 8-byte header and the leading bytes of a disk image:
//   bytes 0..3  the disk's size in 512-byte sectors (little-endian, at most
//               kMaxSectors); the disk is never smaller than the image bytes
//   bytes 4..7  options for the harness (little-endian; each harness says
//               which bits it reads)
//   bytes 8..   the image; the disk reads zeros past its end
// so a large volume whose data sits at its start (a fresh mkfs.fat FAT32, a
// GPT disk) is a small input. fuzz/make-corpus.sh writes seeds in this form.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "fat/byte_reader.h"
#include "io/io_error.h"

namespace lowtide::fuzz {

constexpr size_t kHeaderBytes = 8;
constexpr uint64_t kMaxSectors = uint64_t(1) << 18;  // 128 MiB: FAT32 volumes fit, runs stay fast

struct Input {
  uint64_t disk_size = 0;
  uint32_t options = 0;
  std::vector<uint8_t> image;  // a copy: harnesses may patch it (GPT CRCs)
};

inline uint32_t le32(const uint8_t* p) { return fat::load_le32(p); }

// False when the input is too short for the header.
inline bool parse_input(const uint8_t* data, size_t size, Input* in) {
  if (size < kHeaderBytes) return false;
  const uint64_t sectors = std::min<uint64_t>(le32(data), kMaxSectors);
  in->options = le32(data + 4);
  in->image.assign(data + kHeaderBytes, data + size);
  in->disk_size = std::max<uint64_t>(sectors * 512, in->image.size());
  return true;
}

// The disk: the image's bytes, then zeros up to `size`. Reads past the end
// throw SHORT_READ like every ByteReader.
class ZeroTailReader final : public fat::ByteReader {
 public:
  ZeroTailReader(const std::vector<uint8_t>& image, uint64_t size) : image_(image), size_(size) {}
  uint64_t size() const override { return size_; }
  void read(uint64_t offset, uint8_t* dst, size_t len) override {
    if (offset > size_ || len > size_ - offset)
      throw io::IoError("SHORT_READ",
                        "read of " + std::to_string(len) + " bytes at offset " + std::to_string(offset) + " passes the end", 0,
                        static_cast<int64_t>(offset));
    size_t have = 0;
    if (offset < image_.size()) {
      have = static_cast<size_t>(std::min<uint64_t>(len, image_.size() - offset));
      std::memcpy(dst, image_.data() + offset, have);
    }
    std::memset(dst + have, 0, len - have);
  }

 private:
  const std::vector<uint8_t>& image_;
  uint64_t size_;
};

// A broken invariant: a finding (libFuzzer saves the input).
[[noreturn]] inline void invariant_failed(const char* file, int line, const std::string& what) {
  std::fprintf(stderr, "%s:%d: invariant violated: %s\n", file, line, what.c_str());
  std::abort();
}
#define FUZZ_CHECK(cond, what)                                                                            \
  do {                                                                                                    \
    if (!(cond)) ::lowtide::fuzz::invariant_failed(__FILE__, __LINE__, std::string(#cond ": ") + (what)); \
  } while (0)

// True when `s` is well-formed UTF-8 (no surrogates, no overlongs).
inline bool valid_utf8(const std::string& s) {
  size_t i = 0;
  const size_t n = s.size();
  while (i < n) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    size_t len;
    uint32_t cp;
    if (c < 0x80) {
      i++;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      len = 2, cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3, cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4, cp = c & 0x07;
    } else {
      return false;
    }
    if (i + len > n) return false;
    for (size_t k = 1; k < len; k++) {
      const unsigned char d = static_cast<unsigned char>(s[i + k]);
      if ((d & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (d & 0x3F);
    }
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF))) return false;
    if (cp >= 0xD800 && cp < 0xE000) return false;
    i += len;
  }
  return true;
}

}  // namespace lowtide::fuzz
