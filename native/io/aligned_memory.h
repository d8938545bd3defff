// Aligned memory for O_DIRECT buffers.
#pragma once

#include <cstddef>
#include <utility>

namespace lowtide::io {

// A block of memory aligned for O_DIRECT, freed on destruction.
//
// With `huge`, the block is mapped on its own, 2 MiB-aligned, and marked
// MADV_HUGEPAGE (a hint: the kernel may ignore it). Used for the reader's slab:
// a 1 MiB request in one or two huge pages is one or two segments for the
// device, not 256 scattered 4 KiB pages (a device that takes fewer segments
// per request, such as a virtio disk limited to 254, splits a 1 MiB request
// of small pages in two), and its first touch costs one fault per 2 MiB, not
// one per 4 KiB.
class AlignedMemory {
 public:
  AlignedMemory() = default;
  AlignedMemory(size_t size, size_t alignment, bool huge = false);
  AlignedMemory(const AlignedMemory&) = delete;
  AlignedMemory& operator=(const AlignedMemory&) = delete;
  AlignedMemory(AlignedMemory&& o) noexcept
      : data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)), mapped_(std::exchange(o.mapped_, 0)) {}
  ~AlignedMemory();

  unsigned char* data() const { return data_; }
  size_t size() const { return size_; }
  // Whether the block is its own 2 MiB-aligned mapping with the huge-page hint.
  bool huge() const { return mapped_ != 0; }

 private:
  unsigned char* data_ = nullptr;
  size_t size_ = 0;
  size_t mapped_ = 0;  // length of the mapping when huge, else 0 (malloc'ed)
};

// Whether the kernel gives huge pages to a region marked MADV_HUGEPAGE
// (/sys/kernel/mm/transparent_hugepage/enabled is "always" or "madvise").
bool transparent_huge_pages_enabled();

}  // namespace lowtide::io
