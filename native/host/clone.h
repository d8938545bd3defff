// Copy-on-write clones of whole files (FICLONE), the storage snapshot of a
// file on XFS (reflink=1) or btrfs. Plain C++: no Node-API types here.
#pragma once

#include <string>

namespace lowtide::host {

// Clones `source` into a new file `target` (O_EXCL, mode 0600) that shares
// all of its extents; on failure the new file is removed. Throws io::IoError:
// UNSUPPORTED when the file system cannot clone (EOPNOTSUPP, EINVAL, EXDEV,
// ENOTTY), OUTPUT_EXISTS when `target` exists, NOT_FOUND, PERMISSION_DENIED,
// NO_SPACE or IO_ERROR otherwise.
void clone_file(const std::string& source, const std::string& target);

}  // namespace lowtide::host
