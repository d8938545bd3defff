#include "io/io_error.h"

#include <cstring>
#include <string>

namespace lowtide::io {

std::string errno_text(int err) {
  char buf[256];
  // GNU strerror_r returns a pointer that may or may not be buf.
  const char* text = strerror_r(err, buf, sizeof buf);
  return std::string(text);
}

}  // namespace lowtide::io
