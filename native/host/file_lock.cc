#include "host/file_lock.h"

#include <sys/file.h>
#include <cerrno>

#include "io/io_error.h"

namespace lowtide::host {

bool try_lock_exclusive(int fd) {
  for (;;) {
    if (flock(fd, LOCK_EX | LOCK_NB) == 0) return true;
    if (errno == EINTR) continue;
    if (errno == EWOULDBLOCK) return false;
    int e = errno;
    throw io::IoError("IO_ERROR", "flock failed: " + io::errno_text(e), e);
  }
}

}  // namespace lowtide::host
