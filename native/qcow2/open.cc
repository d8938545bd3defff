#include "qcow2/open.h"

#include <sys/stat.h>

#include <cerrno>
#include <set>
#include <utility>

#include "fat/source_reader.h"

namespace lowtide::qcow2 {
namespace {

std::string dir_of(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

std::string real_path(const std::string& path) {
  char* r = ::realpath(path.c_str(), nullptr);
  if (r == nullptr) {
    const int e = errno;
    throw io::IoError(e == ENOENT ? "NOT_FOUND" : "OPEN_FAILED", path + ": " + io::errno_text(e), e);
  }
  std::string s(r);
  ::free(r);
  return s;
}

bool starts_with_magic(fat::ByteReader& r) {
  if (r.size() < 4) return false;
  uint8_t m[4];
  r.read(0, m, 4);
  return has_magic(m, 4);
}

}  // namespace

OpenedDisk open_disk(const std::string& path, Format format) {
  OpenedDisk d;
  d.chain = std::make_unique<Chain>();
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    const int e = errno;
    throw io::IoError(e == ENOENT ? "NOT_FOUND" : "OPEN_FAILED", path + ": " + io::errno_text(e), e);
  }
  auto top = std::make_unique<fat::SourceReader>(path);
  if (format == Format::Raw || (format == Format::Auto && (S_ISBLK(st.st_mode) || !starts_with_magic(*top)))) {
    d.chain->add_raw(std::move(top), path);
    return d;
  }
  if (format == Format::Qcow2 && !starts_with_magic(*top))
    throw io::IoError("QCOW2_CORRUPT", path + ": not a qcow2 image (the qcow2 magic is missing), but format 'qcow2' was given");
  d.qcow2 = true;
  d.probed = format == Format::Auto;

  std::set<std::pair<dev_t, ino_t>> seen{{st.st_dev, st.st_ino}};
  d.chain->add_qcow2(std::move(top), path);
  for (;;) {
    const Layer& cur = d.chain->layers().back();
    if (!cur.image) break;
    const Header& h = cur.image->header();
    if (h.backing_file.empty()) break;
    if (d.chain->layers().size() > kMaxBackingDepth)
      throw io::IoError("QCOW2_CORRUPT", path + ": the backing chain is deeper than " + std::to_string(kMaxBackingDepth) + " files");
    const std::string& name = h.backing_file;
    const bool absolute = name[0] == '/';
    const std::string bpath = absolute ? name : dir_of(cur.path) + "/" + name;
    if (d.probed && absolute)
      throw io::IoError("BACKING_REFUSED", cur.path + ": the probed qcow2 image names the absolute backing file " + name +
                                               "; a probed image's backing file is followed only when it lies beside the image"
                                               " (pass format 'qcow2' to follow it)");
    struct stat bst {};
    if (::stat(bpath.c_str(), &bst) != 0) {
      const int e = errno;
      throw io::IoError(e == ENOENT ? "NOT_FOUND" : "OPEN_FAILED",
                        cur.path + ": backing file " + bpath + " cannot be opened: " + io::errno_text(e), e);
    }
    if (d.probed && dir_of(real_path(bpath)) != dir_of(real_path(cur.path)))
      throw io::IoError("BACKING_REFUSED", cur.path + ": the probed qcow2 image names the backing file " + name +
                                               ", which does not lie in the image's directory (pass format 'qcow2' to follow it)");
    if (!seen.insert({bst.st_dev, bst.st_ino}).second)
      throw io::IoError("QCOW2_CORRUPT", cur.path + ": the backing chain loops: " + bpath + " is already in the chain");
    const std::string fmt = h.backing_format;
    if (!fmt.empty() && fmt != "qcow2" && fmt != "raw")
      throw io::IoError("UNSUPPORTED", cur.path + ": backing file format '" + fmt + "' is not supported (qcow2 and raw are)");
    auto file = std::make_unique<fat::SourceReader>(bpath);
    const bool is_qcow2 = fmt.empty() ? starts_with_magic(*file) : fmt == "qcow2";
    if (!is_qcow2 && d.probed)
      throw io::IoError("BACKING_REFUSED", cur.path + ": the probed qcow2 image names the raw backing file " + name +
                                               "; raw backing files are followed only with format 'qcow2'");
    if (is_qcow2) d.chain->add_qcow2(std::move(file), bpath);
    else d.chain->add_raw(std::move(file), bpath);
  }
  return d;
}

}  // namespace lowtide::qcow2
