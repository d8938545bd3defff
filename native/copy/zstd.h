// zstd through the system's libzstd.so.1, loaded at run time.
//
// Every Debian system has libzstd1 (dpkg depends on it), but not its headers,
// so the few functions of zstd's stable API that lowtide needs are declared
// here and looked up with dlsym. Each thread keeps one compression and one
// decompression context and reuses them: a fresh context per call allocates
// and fills its tables every time, which can take longer than compressing a
// MiB (about 10 ms per MiB with a fresh context against 3 ms with a reused
// one).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace lowtide::copy {

// Whether libzstd could be loaded; when not, why (for an error message).
bool zstd_available(std::string* why = nullptr);
// libzstd's version ("1.5.4"), or "" when unavailable.
std::string zstd_version();

// Memory from malloc, owned by the caller (free()).
struct ZstdOutput {
  unsigned char* data = nullptr;
  size_t size = 0;
};

// Compresses `len` bytes into one zstd frame (content size recorded) at
// `level`. Throws std::runtime_error with zstd's message on failure.
ZstdOutput zstd_compress(const unsigned char* src, size_t len, int level);

// Largest compressed size of `len` bytes (ZSTD_compressBound).
size_t zstd_compress_bound(size_t len);

// Compresses into caller-owned memory of `cap` bytes (at least the bound);
// returns the compressed size. The caller can reuse `dst`: memory the process
// has touched before costs no page faults to write, fresh memory one per page.
size_t zstd_compress_into(const unsigned char* src, size_t len, unsigned char* dst, size_t cap, int level);

// Decompresses one or more concatenated frames. Fails (std::runtime_error)
// on corrupt input or when the result would exceed `max_size` bytes.
ZstdOutput zstd_decompress(const unsigned char* src, size_t len, size_t max_size);

// Decompresses until `dst` holds exactly `size` bytes; input left after that
// (padding) is ignored. Throws std::runtime_error when the data ends early.
void zstd_decompress_exact(const unsigned char* src, size_t len, unsigned char* dst, size_t size);

// Decompresses one or more frames into caller-owned memory of `cap` bytes;
// returns the size. Fails on corrupt input or when `cap` is too small.
size_t zstd_decompress_into(const unsigned char* src, size_t len, unsigned char* dst, size_t cap);

}  // namespace lowtide::copy
