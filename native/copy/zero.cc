#include "copy/zero.h"

#include <cstring>

namespace lowtide::copy {

bool is_zero(const unsigned char* p, size_t len) {
  // Check a short head by hand, then compare the buffer with itself shifted by
  // the head length: memcmp is vectorised, so this runs at memory bandwidth.
  constexpr size_t kHead = 64;
  size_t head = len < kHead ? len : kHead;
  for (size_t i = 0; i < head; ++i)
    if (p[i] != 0) return false;
  if (len <= kHead) return true;
  return std::memcmp(p, p + kHead, len - kHead) == 0;
}

}  // namespace lowtide::copy
