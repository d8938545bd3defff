// A read-only block source: a regular file or a block device.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "io/fd.h"

namespace lowtide::io {

enum class DirectMode { Auto, On, Off };
// Whether a source of 0 bytes is refused (EMPTY_SOURCE) or opened.
enum class EmptySource { Refuse, Allow };

struct SourceGeometry {
  uint64_t size = 0;                   // bytes
  uint32_t logical_sector_size = 512;  // alignment unit of offsets and lengths for O_DIRECT
  uint32_t physical_sector_size = 512;
  uint32_t memory_alignment = 4096;  // buffer alignment used for reads
  bool direct = false;               // O_DIRECT in use
  bool block_device = false;
};

// Owns the descriptor. Shared by the JS handle and every read running on it,
// so closing the handle while reads are in flight never frees the fd under them.
class BlockSource {
 public:
  // Opens `path` read-only (never O_RDWR/O_WRONLY). Throws IoError.
  static std::shared_ptr<BlockSource> open(const std::string& path, DirectMode mode, EmptySource empty = EmptySource::Refuse);

  int fd() const { return fd_.get(); }
  const SourceGeometry& geometry() const { return geo_; }
  const std::string& path() const { return path_; }

  // Reads exactly `len` bytes at `offset` with pread on the calling thread.
  // With O_DIRECT in use, offset, length and buffer must be aligned. Throws
  // IoError: IO_ERROR when a read fails, SHORT_READ when the source ends first.
  void read_exact(uint64_t offset, void* dst, size_t len) const;

 private:
  BlockSource(std::string path, UniqueFd fd, SourceGeometry geo) : path_(std::move(path)), fd_(std::move(fd)), geo_(geo) {}

  std::string path_;
  UniqueFd fd_;
  SourceGeometry geo_;
};

}  // namespace lowtide::io
