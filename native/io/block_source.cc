#include "io/block_source.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "io/aligned_memory.h"
#include "io/io_error.h"

namespace lowtide::io {
namespace {

int open_flags(bool direct) { return O_RDONLY | O_CLOEXEC | O_NOCTTY | (direct ? O_DIRECT : 0); }

UniqueFd open_or_throw(const std::string& path, bool direct) {
  int fd;
  do {
    fd = ::open(path.c_str(), open_flags(direct));
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) {
    int e = errno;
    if (direct && e == EINVAL) return UniqueFd();  // O_DIRECT refused: caller falls back
    std::string code = e == ENOENT ? "NOT_FOUND" : (e == EACCES || e == EPERM) ? "PERMISSION_DENIED" : "OPEN_FAILED";
    throw IoError(code, "cannot open " + path + ": " + errno_text(e), e);
  }
  return UniqueFd(fd);
}

// Reads the first aligned block with O_DIRECT to learn whether the file system
// really accepts direct I/O (some accept the flag at open and refuse reads).
bool direct_read_works(int fd, uint32_t align, uint64_t size) {
  AlignedMemory probe(align < 4096 ? 4096 : align, 4096);
  size_t len = probe.size();
  ssize_t r;
  do {
    r = ::pread(fd, probe.data(), len, 0);
  } while (r < 0 && errno == EINTR);
  (void)size;
  return r >= 0;
}

}  // namespace

std::shared_ptr<BlockSource> BlockSource::open(const std::string& path, DirectMode mode, EmptySource empty) {
  if (path.empty()) throw IoError("INVALID_ARGUMENT", "source path is empty");
  bool want_direct = mode != DirectMode::Off;
  UniqueFd fd = open_or_throw(path, want_direct);
  bool direct = want_direct && static_cast<bool>(fd);
  if (!fd) {
    if (mode == DirectMode::On) throw IoError("DIRECT_UNSUPPORTED", "O_DIRECT is refused for " + path, EINVAL);
    fd = open_or_throw(path, false);
  }

  struct stat st;
  if (fstat(fd.get(), &st) != 0) {
    int e = errno;
    throw IoError("OPEN_FAILED", "cannot stat " + path + ": " + errno_text(e), e);
  }
  SourceGeometry geo;
  if (S_ISDIR(st.st_mode)) {
    throw IoError("NOT_A_SOURCE", path + " is a directory, not a file or block device", EISDIR);
  } else if (S_ISBLK(st.st_mode)) {
    geo.block_device = true;
    uint64_t bytes = 0;
    if (ioctl(fd.get(), BLKGETSIZE64, &bytes) != 0) {
      int e = errno;
      throw IoError("OPEN_FAILED", "BLKGETSIZE64 failed on " + path + ": " + errno_text(e), e);
    }
    geo.size = bytes;
    int lss = 512;
    unsigned int pss = 512;
    if (ioctl(fd.get(), BLKSSZGET, &lss) != 0 || lss <= 0) lss = 512;
    if (ioctl(fd.get(), BLKPBSZGET, &pss) != 0 || pss == 0) pss = static_cast<unsigned>(lss);
    geo.logical_sector_size = static_cast<uint32_t>(lss);
    geo.physical_sector_size = pss;
  } else if (S_ISREG(st.st_mode)) {
    geo.size = static_cast<uint64_t>(st.st_size);
    geo.logical_sector_size = 512;
    geo.physical_sector_size = 512;
#ifdef STATX_DIOALIGN
    struct statx sx;
    if (direct && statx(fd.get(), "", AT_EMPTY_PATH, STATX_DIOALIGN, &sx) == 0 && (sx.stx_mask & STATX_DIOALIGN) &&
        sx.stx_dio_offset_align > 0) {
      geo.logical_sector_size = sx.stx_dio_offset_align;
      if (geo.physical_sector_size < geo.logical_sector_size) geo.physical_sector_size = geo.logical_sector_size;
    }
#endif
  } else {
    throw IoError("NOT_A_SOURCE", path + " is neither a regular file nor a block device");
  }
  if (geo.size == 0 && empty == EmptySource::Refuse) throw IoError("EMPTY_SOURCE", path + " is empty (0 bytes)");
  if (geo.logical_sector_size > 4096 || (geo.logical_sector_size & (geo.logical_sector_size - 1)) != 0)
    throw IoError("OPEN_FAILED", path + " reports an unusable sector size " + std::to_string(geo.logical_sector_size));

  if (direct && !direct_read_works(fd.get(), geo.logical_sector_size, geo.size)) {
    if (mode == DirectMode::On) throw IoError("DIRECT_UNSUPPORTED", "O_DIRECT reads fail on " + path, errno);
    fd = open_or_throw(path, false);
    direct = false;
  }
  geo.direct = direct;
  if (!direct) geo.logical_sector_size = geo.block_device ? geo.logical_sector_size : 512;
  return std::shared_ptr<BlockSource>(new BlockSource(path, std::move(fd), geo));
}

void BlockSource::read_exact(uint64_t offset, void* dst, size_t len) const {
  auto* out = static_cast<unsigned char*>(dst);
  size_t done = 0;
  while (done < len) {
    ssize_t n = ::pread(fd_.get(), out + done, len - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      int e = errno;
      throw IoError("IO_ERROR", "read of " + path_ + " at offset " + std::to_string(offset + done) + " failed: " + errno_text(e), e,
                    static_cast<int64_t>(offset + done));
    }
    if (n == 0)
      throw IoError("SHORT_READ", path_ + " ended at offset " + std::to_string(offset + done), 0, static_cast<int64_t>(offset + done));
    done += static_cast<size_t>(n);
  }
}

}  // namespace lowtide::io
