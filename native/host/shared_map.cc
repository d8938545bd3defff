#include "host/shared_map.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <map>
#include <mutex>

#include "io/io_error.h"

namespace lowtide::host {
namespace {

std::mutex registry_mu;
std::map<const void*, std::weak_ptr<SharedMap>>& registry() {
  static auto* r = new std::map<const void*, std::weak_ptr<SharedMap>>();
  return *r;
}

}  // namespace

std::shared_ptr<SharedMap> SharedMap::open(const std::string& path, size_t size, bool writable) {
  int fd = ::open(path.c_str(), (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) throw io::IoError("OPEN_FAILED", "cannot open " + path + ": " + io::errno_text(errno), errno);
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || uint64_t(st.st_size) < size) {
    int e = errno;
    ::close(fd);
    throw io::IoError("MAP_FAILED", path + " is not a regular file of at least " + std::to_string(size) + " bytes", e);
  }
  void* p = ::mmap(nullptr, size, PROT_READ | (writable ? PROT_WRITE : 0), MAP_SHARED, fd, 0);
  int e = errno;
  ::close(fd);
  if (p == MAP_FAILED) throw io::IoError("MAP_FAILED", "cannot map " + path + ": " + io::errno_text(e), e);
  std::shared_ptr<SharedMap> m(new SharedMap(static_cast<unsigned char*>(p), size, writable));
  std::lock_guard<std::mutex> lock(registry_mu);
  registry()[p] = m;
  return m;
}

SharedMap::~SharedMap() {
  {
    std::lock_guard<std::mutex> lock(registry_mu);
    registry().erase(data_);
  }
  ::munmap(data_, size_);
}

std::shared_ptr<SharedMap> SharedMap::find(const void* p) {
  std::lock_guard<std::mutex> lock(registry_mu);
  auto it = registry().find(p);
  return it == registry().end() ? nullptr : it->second.lock();
}

}  // namespace lowtide::host
