// The physical layout of a regular file (FIEMAP) and the block device its
// file system lives on. Plain C++: no Node-API types here.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace lowtide::host {

// One FIEMAP extent: `length` bytes at file offset `logical` are at byte
// `physical` of the file system's address space; `flags` are FIEMAP_EXTENT_*.
struct FileExtent {
  uint64_t logical = 0;
  uint64_t physical = 0;
  uint64_t length = 0;
  uint32_t flags = 0;
};

struct FileMapping {
  uint64_t size = 0;       // the file's size when it was mapped
  uint64_t fs_magic = 0;   // statfs f_type
  bool realtime = false;   // XFS: the file's data is on the realtime device
  uint32_t dev_major = 0;  // st_dev of the file
  uint32_t dev_minor = 0;
  std::string device;         // the block device node of st_dev, empty when there is none
  std::string device_reason;  // why `device` is empty
  bool fiemap_ok = false;     // FIEMAP answered
  std::string fiemap_reason;  // why it did not
  int fiemap_errno = 0;
  std::vector<FileExtent> extents;  // sorted by logical offset, inside the asked range
};

// Opens `path` read-only (a regular file, else INVALID_ARGUMENT) and maps the
// bytes [start, start + length) of it (length 0: to the end of the file).
// With `sync`, FIEMAP_FLAG_SYNC writes delayed allocations out first.
// Extents are asked for `batch` at a time, so the ioctl buffer stays small
// however fragmented the file is; more than `max_extents` is TOO_LARGE.
// A file system without FIEMAP is not an error: fiemap_ok is false with the
// reason. Throws io::IoError when the file cannot be opened or examined.
FileMapping map_file(const std::string& path, uint64_t start, uint64_t length, bool sync, uint32_t batch = 256,
                     size_t max_extents = size_t(1) << 24);

// The block device node (/dev/NAME) of device number major:minor through
// /sys/dev/block, checked to be that device; empty with `reason` otherwise.
std::string block_device_of(uint32_t major, uint32_t minor, std::string& reason);

}  // namespace lowtide::host
