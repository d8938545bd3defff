// Memory made resident ahead of its use, by a thread of its own.
//
// On this project's VM the first touch of fresh anonymous memory costs
// ~5 ms per MiB when a thread simply writes to it, but MADV_POPULATE_WRITE
// followed by a read of each page costs ~2.5 ms per MiB, after which writes
// cost nothing (measured with a C program: 4.9-5.0 against 2.5-2.8 ms/MiB,
// then 0.01 ms/MiB). Neither step writes data, so the memory may be used
// while its pages are still being populated. A job that knows it will soon
// read into a buffer prepares it while it waits for other things (the disk,
// with cold caches).
#pragma once

#include <cstddef>
#include <memory>

#include "io/fd.h"

namespace lowtide::io {

// `size` bytes of mapped (zero) memory, of which a thread populates the
// first `populate` bytes front to back. The returned pointer owns the
// thread too: dropping the last reference stops it and waits for it.
std::shared_ptr<AlignedMemory> prepare_memory(size_t size, size_t populate);

}  // namespace lowtide::io
