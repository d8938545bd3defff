#include "host/file_lock.h"

#include <sys/file.h>
#include <cerrno>

#include "io/io_error.h"

namespace lowtide::host {

namespace {

bool try_lock(int fd, int op) {
  for (;;) {
    if (flock(fd, op | LOCK_NB) == 0) return true;
    if (errno == EINTR) continue;
    if (errno == EWOULDBLOCK) return false;
    int e = errno;
    throw io::IoError("IO_ERROR", "flock failed: " + io::errno_text(e), e);
  }
}

}  // namespace

bool try_lock_exclusive(int fd) { return try_lock(fd, LOCK_EX); }

bool try_lock_shared(int fd) { return try_lock(fd, LOCK_SH); }

}  // namespace lowtide::host
