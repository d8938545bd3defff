// SHA-256 of blocks through the OpenSSL that Node itself links.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

namespace lowtide::copy {

using Digest = std::array<uint8_t, 32>;

// SHA-256 of `len` bytes at `p`. Throws std::runtime_error if OpenSSL fails.
Digest sha256(const unsigned char* p, size_t len);

}  // namespace lowtide::copy
