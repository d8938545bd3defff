// Byte-range access and bounds-checked little-endian field reads shared by
// the FAT and partition-table parsers. Plain C++: no Node-API types.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include "io/io_error.h"

namespace lowtide::fat {

// Where parsers get their bytes from. Offsets are relative to whatever the
// reader represents (a whole disk or one volume). `read` fills exactly `len`
// bytes or throws io::IoError (SHORT_READ past the end, IO_ERROR on failure).
struct ByteReader {
  virtual ~ByteReader() = default;
  virtual uint64_t size() const = 0;
  virtual void read(uint64_t offset, uint8_t* dst, size_t len) = 0;
};

// A reader over memory (tests, fuzzing).
class SpanReader final : public ByteReader {
 public:
  SpanReader(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  uint64_t size() const override { return size_; }
  void read(uint64_t offset, uint8_t* dst, size_t len) override {
    if (offset > size_ || len > size_ - offset)
      throw io::IoError("SHORT_READ",
                        "read of " + std::to_string(len) + " bytes at offset " + std::to_string(offset) + " passes the end (" +
                            std::to_string(size_) + " bytes)",
                        0, static_cast<int64_t>(offset));
    std::memcpy(dst, data_ + offset, len);
  }

 private:
  const uint8_t* data_;
  size_t size_;
};

// A window [base, base + size) of another reader; offsets are window-relative.
class WindowReader final : public ByteReader {
 public:
  WindowReader(ByteReader& inner, uint64_t base, uint64_t size) : inner_(inner), base_(base), size_(size) {}
  uint64_t size() const override { return size_; }
  void read(uint64_t offset, uint8_t* dst, size_t len) override {
    if (offset > size_ || len > size_ - offset)
      throw io::IoError(
          "SHORT_READ",
          "read of " + std::to_string(len) + " bytes at offset " + std::to_string(base_ + offset) + " passes the end of the volume", 0,
          static_cast<int64_t>(base_ + offset));
    inner_.read(base_ + offset, dst, len);
  }

 private:
  ByteReader& inner_;
  uint64_t base_;
  uint64_t size_;
};

// A parsed structure in memory: every field read is bounds-checked and an
// out-of-range read throws `code` naming the structure and the byte offset
// (`base` is the structure's offset on the source, for messages).
class Bytes {
 public:
  Bytes(const uint8_t* p, size_t n, uint64_t base, const char* code, const char* what)
      : p_(p), n_(n), base_(base), code_(code), what_(what) {}

  size_t size() const { return n_; }
  uint64_t base() const { return base_; }
  const uint8_t* data() const { return p_; }

  uint8_t u8(size_t off) const {
    check(off, 1);
    return p_[off];
  }
  uint16_t u16(size_t off) const {
    check(off, 2);
    return static_cast<uint16_t>(p_[off] | (p_[off + 1] << 8));
  }
  uint32_t u32(size_t off) const {
    check(off, 4);
    return static_cast<uint32_t>(p_[off]) | (static_cast<uint32_t>(p_[off + 1]) << 8) | (static_cast<uint32_t>(p_[off + 2]) << 16) |
           (static_cast<uint32_t>(p_[off + 3]) << 24);
  }
  uint64_t u64(size_t off) const { return static_cast<uint64_t>(u32(off)) | (static_cast<uint64_t>(u32(off + 4)) << 32); }
  const uint8_t* at(size_t off, size_t len) const {
    check(off, len);
    return p_ + off;
  }
  bool equals(size_t off, const char* s, size_t len) const { return std::memcmp(at(off, len), s, len) == 0; }

  [[noreturn]] void fail(size_t off, const std::string& message) const {
    throw io::IoError(code_, std::string(what_) + " at byte offset " + std::to_string(base_ + off) + ": " + message, 0,
                      static_cast<int64_t>(base_ + off));
  }

 private:
  void check(size_t off, size_t len) const {
    if (off > n_ || len > n_ - off) fail(off, "field of " + std::to_string(len) + " bytes lies outside the structure");
  }

  const uint8_t* p_;
  size_t n_;
  uint64_t base_;
  const char* code_;
  const char* what_;
};

// Unchecked little-endian loads for hot loops whose bounds are established
// once outside the loop.
inline uint16_t load_le16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
inline uint32_t load_le32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) | (static_cast<uint32_t>(p[2]) << 16) |
         (static_cast<uint32_t>(p[3]) << 24);
}

[[noreturn]] inline void corrupt(const char* code, const std::string& what, uint64_t offset, const std::string& message) {
  throw io::IoError(code, what + " at byte offset " + std::to_string(offset) + ": " + message, 0, static_cast<int64_t>(offset));
}

// UTF-16 code units to UTF-8; unpaired surrogates become U+FFFD.
std::string utf16_to_utf8(const uint16_t* units, size_t count);

}  // namespace lowtide::fat
