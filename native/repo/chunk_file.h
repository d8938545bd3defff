// One chunk file of the repository (docs/repository-format.md, "Chunks"),
// written in one go on a pool thread: compress (unless a sample says it will
// not shrink), write header and body to a new temporary file, fsync, close,
// move into place without replacing a chunk file that is there already
// (another writer's: many backups may store into one repository at once).
// The directory fsyncs are the caller's (batched).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "crypto/aead.h"

namespace lowtide::repo {

constexpr uint32_t kChunkMagic = 0x3143544c;  // "LTC1" little-endian
constexpr size_t kChunkHeaderSize = 16;
enum class ChunkEncoding : uint8_t { Raw = 0, Zstd = 1 };

struct StoredChunk {
  bool written = false;       // false: `final_path` existed already (or appeared meanwhile), nothing was written
  uint64_t stored_bytes = 0;  // header + body
  ChunkEncoding encoding = ChunkEncoding::Raw;
};

// Whether to compress (docs/repository-format.md, "Chunk file"): data of
// 256 KiB or more is sampled (four 16 KiB pieces, level 1) and
// stored raw when the sample saves less than 3 %; data that does not shrink
// at `level` is stored raw too. The temporary file is created with O_EXCL and
// removed on any failure. A missing directory of `final_path` is created.
// `final_path` counts as present only when it is a regular file (lstat):
// anything else there (a symbolic link above all) is replaced by the rename.
// With `key` (an encrypted repository), header and body are sealed as one
// object (crypto::seal, with `aad`) and the file holds that object.
// Throws io::IoError: REPO_FULL (ENOSPC, EDQUOT), IO_ERROR (the existence
// check), WRITE_FAILED (anything else), INTERNAL (zstd, OpenSSL).
StoredChunk store_chunk_file(const unsigned char* plain, size_t len, int level, const std::string& tmp_path,
                             const std::string& final_path, const crypto::Key* key = nullptr, const std::string& aad = {});

// Room a chunk object needs beyond its plaintext's size: the header, and
// the nonce and tag when it is sealed (never more: a body is compressed only
// when that makes it smaller).
constexpr size_t kChunkObjectOverhead = kChunkHeaderSize + crypto::kSealOverhead;

// A chunk object in memory: the bytes store_chunk_file would write (header
// and body, or with `key` the sealed object), for a remote repository,
// written to `out` (`capacity` at least len + kChunkObjectOverhead). Returns
// their size. Throws io::IoError INTERNAL (zstd, OpenSSL, no room).
size_t encode_chunk_object(const unsigned char* plain, size_t len, int level, const crypto::Key* key, const std::string& aad,
                           unsigned char* out, size_t capacity);

}  // namespace lowtide::repo
