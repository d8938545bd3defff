#include "io/aligned_memory.h"

#include <sys/mman.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <string>

namespace lowtide::io {

AlignedMemory::AlignedMemory(size_t size, size_t alignment, bool huge) : size_(size) {
  if (size == 0) size = alignment;
  constexpr size_t kHuge = size_t(2) << 20;
  if (huge && alignment <= kHuge) {
    // Map 2 MiB more than needed, then give back the unaligned head and tail.
    size_t len = (size + kHuge - 1) / kHuge * kHuge;
    void* p = mmap(nullptr, len + kHuge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p != MAP_FAILED) {
      auto base = reinterpret_cast<uintptr_t>(p);
      uintptr_t start = (base + kHuge - 1) & ~uintptr_t(kHuge - 1);
      if (start > base) munmap(p, start - base);
      size_t tail = (base + len + kHuge) - (start + len);
      if (tail > 0) munmap(reinterpret_cast<void*>(start + len), tail);
#ifdef MADV_HUGEPAGE
      madvise(reinterpret_cast<void*>(start), len, MADV_HUGEPAGE);  // a hint; failure is harmless
#endif
      data_ = reinterpret_cast<unsigned char*>(start);
      mapped_ = len;
      return;
    }
    // No mapping: fall through to ordinary aligned memory.
  }
  void* p = nullptr;
  if (posix_memalign(&p, alignment, size) != 0) throw std::bad_alloc();
  data_ = static_cast<unsigned char*>(p);
}

AlignedMemory::~AlignedMemory() {
  if (mapped_ != 0) munmap(data_, mapped_);
  else std::free(data_);
}

bool transparent_huge_pages_enabled() {
  static const bool enabled = [] {
    FILE* f = std::fopen("/sys/kernel/mm/transparent_hugepage/enabled", "re");
    if (f == nullptr) return false;
    char buf[128] = {0};
    size_t n = std::fread(buf, 1, sizeof buf - 1, f);
    std::fclose(f);
    std::string text(buf, n);
    return text.find("[never]") == std::string::npos && text.find('[') != std::string::npos;
  }();
  return enabled;
}

}  // namespace lowtide::io
