// Opening a source as a guest disk: the format decision and the backing-file
// rule that closes the format-probing hole.
//
// - 'raw': the file or device as it is (one raw layer).
// - 'qcow2': the user named the format: the file must be qcow2; its backing
//   chain is followed (relative names from the image's directory, absolute
//   names as they are).
// - 'auto': a block device is always raw. A regular file starting with the
//   qcow2 magic is read as qcow2, but then its header was written by whoever
//   wrote the file (a guest can write one into its raw disk), so a backing
//   file is followed only when its name is relative and it lies in the same
//   directory as the image, and only when it is qcow2 itself (a raw backing
//   file named by a probed image is refused: BACKING_REFUSED).
// Chains are at most kMaxBackingDepth backing files deep, and a file that is
// already in the chain is a loop (QCOW2_CORRUPT).
#pragma once

#include <memory>
#include <string>

#include "qcow2/chain.h"

namespace lowtide::qcow2 {

enum class Format { Raw, Qcow2, Auto };

struct OpenedDisk {
  std::unique_ptr<Chain> chain;
  bool qcow2 = false;
  bool probed = false;  // the format was detected, not named
};

// Throws io::IoError (NOT_FOUND, QCOW2_CORRUPT, UNSUPPORTED, BACKING_REFUSED, ...).
OpenedDisk open_disk(const std::string& path, Format format);

}  // namespace lowtide::qcow2
