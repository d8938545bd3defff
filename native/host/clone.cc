#include "host/clone.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cerrno>

#include "io/fd.h"
#include "io/io_error.h"

namespace lowtide::host {
namespace {

std::string open_code(int e) {
  switch (e) {
    case ENOENT: return "NOT_FOUND";
    case EACCES:
    case EPERM: return "PERMISSION_DENIED";
    case EEXIST: return "OUTPUT_EXISTS";
    case ENOSPC:
    case EDQUOT: return "NO_SPACE";
    default: return "IO_ERROR";
  }
}

int open_retry(const char* path, int flags, mode_t mode = 0) {
  for (;;) {
    int fd = ::open(path, flags, mode);
    if (fd >= 0 || errno != EINTR) return fd;
  }
}

}  // namespace

void clone_file(const std::string& source, const std::string& target) {
  int src = open_retry(source.c_str(), O_RDONLY | O_CLOEXEC);
  if (src < 0) {
    int e = errno;
    throw io::IoError(open_code(e), "cannot open " + source + ": " + io::errno_text(e), e);
  }
  io::UniqueFd src_fd(src);
  int dst = open_retry(target.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (dst < 0) {
    int e = errno;
    throw io::IoError(open_code(e), "cannot create " + target + ": " + io::errno_text(e), e);
  }
  io::UniqueFd dst_fd(dst);
  int rc;
  do {
    rc = ::ioctl(dst_fd.get(), FICLONE, src_fd.get());
  } while (rc != 0 && errno == EINTR);
  if (rc != 0) {
    int e = errno;
    ::unlink(target.c_str());
    bool unsupported = e == EOPNOTSUPP || e == EINVAL || e == EXDEV || e == ENOTTY;
    std::string code = unsupported ? "UNSUPPORTED" : e == ENOSPC ? "NO_SPACE" : "IO_ERROR";
    throw io::IoError(code, "cannot clone " + source + " (FICLONE): " + io::errno_text(e), e);
  }
  if (::fsync(dst_fd.get()) != 0) {
    int e = errno;
    ::unlink(target.c_str());
    throw io::IoError("IO_ERROR", "fsync of the clone " + target + " failed: " + io::errno_text(e), e);
  }
}

}  // namespace lowtide::host
