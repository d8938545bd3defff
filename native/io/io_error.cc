#include "io/io_error.h"

#include <cstring>
#include <new>

#include "io/fd.h"

namespace lowtide::io {

std::string errno_text(int err) {
  char buf[256];
  // GNU strerror_r returns a pointer that may or may not be buf.
  const char* text = strerror_r(err, buf, sizeof buf);
  return std::string(text);
}

AlignedMemory::AlignedMemory(size_t size, size_t alignment) : size_(size) {
  void* p = nullptr;
  if (size == 0) size = alignment;
  if (posix_memalign(&p, alignment, size) != 0) throw std::bad_alloc();
  data_ = static_cast<unsigned char*>(p);
}

}  // namespace lowtide::io
