#include "io/prepared_memory.h"

#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <system_error>
#include <thread>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

namespace lowtide::io {
namespace {

constexpr size_t kPage = 4096;
constexpr size_t kStep = 256 * 1024;

struct Prepared {
  AlignedMemory mem;
  std::atomic<bool> stop{false};
  std::thread worker;

  Prepared(size_t size, size_t populate) : mem(size, kPage, /*huge=*/false, /*mapped=*/true) {
    populate = std::min(populate, mem.size());
    if (populate == 0 || !mem.zeroed()) return;
    try {
      worker = std::thread([this, populate] { run(populate); });
    } catch (const std::system_error&) {
      // No thread: the memory is still good, only not prepared.
    }
  }
  ~Prepared() {
    stop = true;
    if (worker.joinable()) worker.join();
  }

  void run(size_t populate) {
    auto* p = static_cast<volatile unsigned char*>(mem.data());
    for (size_t off = 0; off < populate && !stop.load(std::memory_order_relaxed); off += kStep) {
      size_t n = std::min(kStep, populate - off);
      // Pages a read has reached first are left as they are; nothing is written.
      if (madvise(const_cast<unsigned char*>(p) + off, n, MADV_POPULATE_WRITE) != 0) return;
      unsigned sink = 0;
      for (size_t i = 0; i < n; i += kPage) sink += p[off + i];
      (void)sink;
    }
  }
};

}  // namespace

std::shared_ptr<AlignedMemory> prepare_memory(size_t size, size_t populate) {
  auto owner = std::make_shared<Prepared>(size, populate);
  return std::shared_ptr<AlignedMemory>(owner, &owner->mem);
}

}  // namespace lowtide::io
