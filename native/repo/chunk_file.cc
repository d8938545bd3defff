#include "repo/chunk_file.h"

#include <fcntl.h>
#include <stdio.h>  // renameat2, RENAME_NOREPLACE (glibc 2.28)
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>

#include "copy/zstd.h"
#include "io/fd.h"
#include "io/io_error.h"

namespace lowtide::repo {
namespace {

constexpr size_t kSamplePieces = 4;
constexpr size_t kSamplePiece = 16 * 1024;

// Per pool thread, reused: fresh memory costs a page fault per page. Not a
// std::vector: resizing one zero-fills it, touching all of a compression
// bound's pages where zstd writes only as many as the compressed size needs.
struct Scratch {
  std::unique_ptr<unsigned char[]> data;
  size_t capacity = 0;
  unsigned char* get(size_t size) {
    if (size > capacity) {
      data.reset(new unsigned char[size]);  // uninitialised
      capacity = size;
    }
    return data.get();
  }
};

Scratch& scratch(int which) {
  thread_local Scratch buffers[3];
  return buffers[which];
}

bool worth_compressing(const unsigned char* plain, size_t len) {
  if (len < kSamplePieces * kSamplePiece * 4) return true;
  constexpr size_t kSampleSize = kSamplePieces * kSamplePiece;
  unsigned char* sample = scratch(0).get(kSampleSize);
  size_t step = len / kSamplePieces;
  for (size_t i = 0; i < kSamplePieces; i++) std::memcpy(sample + i * kSamplePiece, plain + i * step, kSamplePiece);
  size_t cap = copy::zstd_compress_bound(kSampleSize);
  size_t n = copy::zstd_compress_into(sample, kSampleSize, scratch(1).get(cap), cap, 1);
  return double(n) <= double(kSampleSize) * 0.97;
}

[[noreturn]] void fail(int err, const std::string& what) {
  if (err == ENOSPC || err == EDQUOT) throw io::IoError("REPO_FULL", "the repository's file system is full (" + what + ")", err);
  // "EFBIG (File too large)": the name as Node's own errors give it, then the text.
  const char* name = strerrorname_np(err);
  throw io::IoError("WRITE_FAILED", what + ": " + (name ? std::string(name) + " (" + io::errno_text(err) + ")" : io::errno_text(err)),
                    err);
}

void write_all(int fd, iovec* iov, int count, const std::string& what) {
  off_t pos = 0;
  while (count > 0) {
    ssize_t n = ::pwritev(fd, iov, count, pos);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail(errno, what);
    }
    // A write that fills the file system can return short; the next one then fails with ENOSPC.
    if (n == 0) throw io::IoError("WRITE_FAILED", what + ": a write made no progress at offset " + std::to_string(pos));
    pos += n;
    size_t left = size_t(n);
    while (count > 0 && left >= iov->iov_len) {
      left -= iov->iov_len;
      iov++;
      count--;
    }
    if (count > 0) {
      iov->iov_base = static_cast<unsigned char*>(iov->iov_base) + left;
      iov->iov_len -= left;
    }
  }
}

// Moves `tmp` to `final` unless `final` exists (as anything, a link
// included): renameat2(RENAME_NOREPLACE), or where the file system does not
// support that, link(2) and unlink of the temporary name (both fail with
// EEXIST rather than replace). Returns 0, or the errno of the failure.
int place_no_replace(const std::string& tmp, const std::string& final_path) {
  if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, final_path.c_str(), RENAME_NOREPLACE) == 0) return 0;
  if (errno != EINVAL && errno != ENOSYS) return errno;
  if (::link(tmp.c_str(), final_path.c_str()) != 0) return errno;
  ::unlink(tmp.c_str());
  return 0;
}

// A chunk's body: `plain` itself, or its zstd frame in this thread's scratch
// memory when a sample says it is worth trying and the frame is smaller.
struct Body {
  const unsigned char* data;
  size_t size;
  ChunkEncoding encoding;
};

Body chunk_body(const unsigned char* plain, size_t len, int level) {
  if (!worth_compressing(plain, len)) return {plain, len, ChunkEncoding::Raw};
  size_t cap = copy::zstd_compress_bound(len);
  unsigned char* out = scratch(1).get(cap);
  size_t n;
  try {
    n = copy::zstd_compress_into(plain, len, out, cap, level);
  } catch (const std::exception& e) {
    throw io::IoError("INTERNAL", std::string("zstd: ") + e.what());
  }
  if (n < len) return {out, n, ChunkEncoding::Zstd};
  return {plain, len, ChunkEncoding::Raw};
}

void chunk_header(ChunkEncoding encoding, uint64_t plain_len, unsigned char* header) {
  std::memset(header, 0, kChunkHeaderSize);
  uint32_t magic = kChunkMagic;
  std::memcpy(header, &magic, 4);  // little-endian host (static_assert in the bindings)
  header[4] = static_cast<uint8_t>(encoding);
  std::memcpy(header + 8, &plain_len, 8);
}

}  // namespace

StoredChunk store_chunk_file(const unsigned char* plain, size_t len, int level, const std::string& tmp_path,
                             const std::string& final_path, const crypto::Key* key, const std::string& aad) {
  // Present only as a regular file of its own: lstat never follows a link. A
  // symbolic link (or FIFO, socket, device) in a chunk's place is not the
  // chunk: the chunk is written, and the rename replaces that entry itself,
  // never what a link points to.
  struct stat st;
  if (::lstat(final_path.c_str(), &st) == 0) {
    if (S_ISREG(st.st_mode)) return {};
  } else if (errno != ENOENT) {
    int err = errno;
    throw io::IoError("IO_ERROR", "checking " + final_path + ": " + io::errno_text(err), err);
  }

  StoredChunk r;
  unsigned char header[kChunkHeaderSize];
  Body b = chunk_body(plain, len, level);
  r.encoding = b.encoding;
  const unsigned char* body = b.data;
  size_t body_len = b.size;
  chunk_header(b.encoding, len, header);

  iovec iov[2] = {{header, kChunkHeaderSize}, {const_cast<unsigned char*>(body), body_len}};
  int iov_count = 2;
  size_t file_len = kChunkHeaderSize + body_len;
  if (key != nullptr) {
    crypto::Bytes parts[2] = {{header, kChunkHeaderSize}, {body, body_len}};
    unsigned char* sealed = scratch(2).get(file_len + crypto::kSealOverhead);
    try {
      file_len = crypto::seal(*key, {reinterpret_cast<const uint8_t*>(aad.data()), aad.size()}, parts, 2, sealed);
    } catch (const std::exception& e) {
      throw io::IoError("INTERNAL", e.what());
    }
    iov[0] = {sealed, file_len};
    iov_count = 1;
  }

  const std::string what = "writing " + final_path;
  io::UniqueFd fd(::open(tmp_path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
  if (!fd) fail(errno, what);
  try {
    write_all(fd.get(), iov, iov_count, what);
    if (::fsync(fd.get()) != 0) fail(errno, what);
    // Closed here, not by the destructor: a failing close is a failed write.
    if (::close(fd.release()) != 0) fail(errno, what);
    int placed = place_no_replace(tmp_path, final_path);
    if (placed == ENOENT) {
      std::string dir = final_path.substr(0, final_path.rfind('/'));
      if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) fail(errno, "creating " + dir);
      placed = place_no_replace(tmp_path, final_path);
    }
    if (placed == EEXIST) {
      struct stat there;
      if (::lstat(final_path.c_str(), &there) == 0 && S_ISREG(there.st_mode)) {
        // Another writer stored the same chunk (the same bytes) meanwhile.
        ::unlink(tmp_path.c_str());
        return {};
      }
      // Not a chunk file (a dangling symbolic link, say): the chunk takes its
      // place, as a rename does; a link is replaced, never followed.
      placed = ::rename(tmp_path.c_str(), final_path.c_str()) == 0 ? 0 : errno;
    }
    if (placed != 0) fail(placed, what);
  } catch (...) {
    fd.reset();
    ::unlink(tmp_path.c_str());
    throw;
  }
  r.written = true;
  r.stored_bytes = file_len;
  return r;
}

size_t encode_chunk_object(const unsigned char* plain, size_t len, int level, const crypto::Key* key, const std::string& aad,
                           unsigned char* out, size_t capacity) {
  if (capacity < len + kChunkObjectOverhead) throw io::IoError("INTERNAL", "encode_chunk_object: the output has no room");
  unsigned char header[kChunkHeaderSize];
  Body b = chunk_body(plain, len, level);
  chunk_header(b.encoding, len, header);
  if (key == nullptr) {
    std::memcpy(out, header, kChunkHeaderSize);
    std::memcpy(out + kChunkHeaderSize, b.data, b.size);
    return kChunkHeaderSize + b.size;
  }
  crypto::Bytes parts[2] = {{header, kChunkHeaderSize}, {b.data, b.size}};
  try {
    return crypto::seal(*key, {reinterpret_cast<const uint8_t*>(aad.data()), aad.size()}, parts, 2, out);
  } catch (const std::exception& e) {
    throw io::IoError("INTERNAL", e.what());
  }
}

}  // namespace lowtide::repo
