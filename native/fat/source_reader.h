// A ByteReader (fat/byte_reader.h) over a file or block device, for the
// partition-table and FAT parsers: an io::BlockSource opened without O_DIRECT,
// so any offset and length can be read, and read with pread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "fat/byte_reader.h"
#include "io/block_source.h"
#include "io/io_error.h"

namespace lowtide::fat {

class SourceReader final : public ByteReader {
 public:
  // Opens `path` read-only; a 0-byte file is opened (the parsers report what
  // is missing). Throws io::IoError.
  explicit SourceReader(const std::string& path) : source_(io::BlockSource::open(path, io::DirectMode::Off, io::EmptySource::Allow)) {}

  uint64_t size() const override { return source_->geometry().size; }

  void read(uint64_t offset, uint8_t* dst, size_t len) override {
    const uint64_t size = source_->geometry().size;
    if (offset > size || len > size - offset)
      throw io::IoError("SHORT_READ",
                        "read of " + std::to_string(len) + " bytes at offset " + std::to_string(offset) + " passes the end of " +
                            source_->path() + " (" + std::to_string(size) + " bytes)",
                        0, static_cast<int64_t>(offset));
    source_->read_exact(offset, dst, len);
  }

 private:
  std::shared_ptr<io::BlockSource> source_;
};

}  // namespace lowtide::fat
