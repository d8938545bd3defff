// FIEMAP over a file opened read-only, in batches, and the block device
// under its file system.
#include "host/fiemap.h"

#include <fcntl.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <memory>

#include "io/fd.h"
#include "io/io_error.h"

namespace lowtide::host {
namespace {

constexpr uint32_t kXfsRealtimeFlag = 0x00000001;  // FS_XFLAG_REALTIME

bool is_xfs_realtime(int fd) {
#ifdef FS_IOC_FSGETXATTR
  struct fsxattr attr;
  std::memset(&attr, 0, sizeof attr);
  if (::ioctl(fd, FS_IOC_FSGETXATTR, &attr) != 0) return false;
  return (attr.fsx_xflags & kXfsRealtimeFlag) != 0;
#else
  (void)fd;
  return false;
#endif
}

}  // namespace

std::string block_device_of(uint32_t major, uint32_t minor, std::string& reason) {
  std::string id = std::to_string(major) + ":" + std::to_string(minor);
  if (major == 0) {
    reason = "the file system is on an anonymous device " + id + " (no block device: btrfs, overlayfs, tmpfs, network or FUSE)";
    return {};
  }
  std::ifstream uevent("/sys/dev/block/" + id + "/uevent");
  if (!uevent) {
    reason = "device " + id + " is not a block device (/sys/dev/block/" + id + " is missing)";
    return {};
  }
  std::string line, name;
  while (std::getline(uevent, line)) {
    if (line.rfind("DEVNAME=", 0) == 0) name = line.substr(8);
  }
  if (name.empty() || name.find("..") != std::string::npos) {
    reason = "block device " + id + " has no device name in /sys/dev/block/" + id + "/uevent";
    return {};
  }
  std::string node = "/dev/" + name;
  struct stat st;
  if (::stat(node.c_str(), &st) != 0 || !S_ISBLK(st.st_mode) || ::major(st.st_rdev) != major || ::minor(st.st_rdev) != minor) {
    reason = node + " is not the block device " + id;
    return {};
  }
  return node;
}

FileMapping map_file(const std::string& path, uint64_t start, uint64_t length, bool sync, uint32_t batch, size_t max_extents) {
  io::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY));
  if (!fd) {
    int e = errno;
    const char* code = e == ENOENT || e == ENOTDIR ? "NOT_FOUND" : e == EACCES || e == EPERM ? "PERMISSION_DENIED" : "OPEN_FAILED";
    throw io::IoError(code, "cannot open " + path + " read-only: " + io::errno_text(e), e);
  }
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) {
    int e = errno;
    throw io::IoError("IO_ERROR", "cannot stat " + path + ": " + io::errno_text(e), e);
  }
  if (!S_ISREG(st.st_mode)) throw io::IoError("INVALID_ARGUMENT", path + " is not a regular file: only files have an offset table");
  FileMapping m;
  m.size = uint64_t(st.st_size);
  m.dev_major = ::major(st.st_dev);
  m.dev_minor = ::minor(st.st_dev);
  struct statfs sfs;
  if (::fstatfs(fd.get(), &sfs) == 0) m.fs_magic = uint64_t(sfs.f_type);
  m.realtime = is_xfs_realtime(fd.get());
  m.device = block_device_of(m.dev_major, m.dev_minor, m.device_reason);

  uint64_t end = length == 0 ? m.size : start + length;
  if (end < start) throw io::IoError("OUT_OF_RANGE", "the range to map overflows", 0, int64_t(start));
  if (batch == 0) batch = 1;
  size_t bytes = sizeof(struct fiemap) + size_t(batch) * sizeof(struct fiemap_extent);
  auto buf = std::make_unique<uint64_t[]>((bytes + 7) / 8);
  auto* fm = reinterpret_cast<struct fiemap*>(buf.get());
  uint64_t pos = start;
  bool first = true;
  m.fiemap_ok = true;
  while (pos < end) {
    std::memset(fm, 0, bytes);
    fm->fm_start = pos;
    fm->fm_length = end - pos;
    fm->fm_flags = sync && first ? FIEMAP_FLAG_SYNC : 0;
    fm->fm_extent_count = batch;
    first = false;
    if (::ioctl(fd.get(), FS_IOC_FIEMAP, fm) != 0) {
      int e = errno;
      if (e == EOPNOTSUPP || e == ENOTTY || e == EINVAL || e == EBADR) {
        m.fiemap_ok = false;
        m.fiemap_errno = e;
        m.fiemap_reason = "FIEMAP is not supported here: " + io::errno_text(e);
        m.extents.clear();
        return m;
      }
      throw io::IoError("IO_ERROR", "FIEMAP of " + path + " failed at offset " + std::to_string(pos) + ": " + io::errno_text(e), e,
                        int64_t(pos));
    }
    uint32_t n = fm->fm_mapped_extents;
    if (n == 0) break;
    bool last = false;
    uint64_t next = pos;
    for (uint32_t i = 0; i < n && i < batch; ++i) {
      const struct fiemap_extent& x = fm->fm_extents[i];
      if (x.fe_length == 0) continue;
      uint64_t xend = x.fe_logical + x.fe_length;
      if (xend < x.fe_logical) throw io::IoError("IO_ERROR", "FIEMAP of " + path + " returned an extent that overflows");
      // Keep the part inside [pos, end): the first extent may start before pos.
      uint64_t lo = std::max<uint64_t>(x.fe_logical, pos);
      uint64_t hi = std::min<uint64_t>(xend, end);
      if (lo < hi) {
        if (!m.extents.empty()) {
          const FileExtent& prev = m.extents.back();
          if (lo < prev.logical + prev.length)
            throw io::IoError("IO_ERROR", "FIEMAP of " + path + " returned overlapping extents at offset " + std::to_string(lo), 0,
                              int64_t(lo));
        }
        if (m.extents.size() >= max_extents)
          throw io::IoError("UNSUPPORTED", path + " has more than " + std::to_string(max_extents) + " extents");
        m.extents.push_back({lo, x.fe_physical + (lo - x.fe_logical), hi - lo, x.fe_flags});
      }
      next = std::max(next, xend);
      if (x.fe_flags & FIEMAP_EXTENT_LAST) last = true;
    }
    if (last || next <= pos) break;
    pos = next;
  }
  return m;
}

}  // namespace lowtide::host
