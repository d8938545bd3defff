// Errors raised by the I/O layer. Plain C++: no Node-API types here.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

namespace lowtide::io {

// A failure with a stable code (see lib/errors.ts), the errno where there
// is one (0 otherwise) and the byte offset involved (-1 when none).
class IoError : public std::runtime_error {
 public:
  IoError(std::string code, std::string message, int err = 0, int64_t offset = -1)
      : std::runtime_error(std::move(message)), code_(std::move(code)), errno_(err), offset_(offset) {}

  const std::string& code() const { return code_; }
  int err() const { return errno_; }
  int64_t offset() const { return offset_; }

 private:
  std::string code_;
  int errno_;
  int64_t offset_;
};

// "strerror" that is thread-safe.
std::string errno_text(int err);

}  // namespace lowtide::io
