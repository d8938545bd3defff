// Zero detection for blocks.
#pragma once

#include <cstddef>

namespace lowtide::copy {

// True when all `len` bytes at `p` are zero.
bool is_zero(const unsigned char* p, size_t len);

}  // namespace lowtide::copy
