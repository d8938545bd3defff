// A minimal io_uring ring driven through raw syscalls (no liburing).
#pragma once

#include <linux/io_uring.h>
#include <cstdint>

#include "io/fd.h"

namespace lowtide::io {

class Uring {
 public:
  // Throws IoError("URING_UNAVAILABLE") when the kernel refuses a ring.
  explicit Uring(unsigned entries);
  Uring(const Uring&) = delete;
  Uring& operator=(const Uring&) = delete;
  ~Uring();

  // True when this kernel gives us a ring (probe once per call; cheap).
  static bool available();

  unsigned sq_entries() const { return sq_entries_; }

  // Next free submission entry, zeroed; nullptr when the SQ is full.
  io_uring_sqe* get_sqe();
  // Publishes queued entries, then waits for at least `wait_nr` completions.
  // Returns the number submitted; throws IoError on failure other than EINTR/EAGAIN/EBUSY.
  unsigned submit_and_wait(unsigned wait_nr);
  // Calls fn(cqe) for every available completion and consumes them. Returns the count.
  template <typename Fn>
  unsigned for_each_cqe(Fn&& fn) {
    unsigned head = *cq_head_;
    unsigned tail = __atomic_load_n(cq_tail_, __ATOMIC_ACQUIRE);
    unsigned n = 0;
    while (head != tail) {
      fn(&cqes_[head & *cq_mask_]);
      ++head;
      ++n;
    }
    if (n) __atomic_store_n(cq_head_, head, __ATOMIC_RELEASE);
    return n;
  }
  // Registers one buffer (index 0) for READ_FIXED. Returns false when refused (e.g. memlock limits).
  bool register_buffer(void* base, size_t len);

 private:
  UniqueFd fd_;
  void* sq_ptr_ = nullptr;
  size_t sq_len_ = 0;
  void* cq_ptr_ = nullptr;
  size_t cq_len_ = 0;
  io_uring_sqe* sqes_ = nullptr;
  size_t sqes_len_ = 0;

  unsigned* sq_head_ = nullptr;
  unsigned* sq_tail_ = nullptr;
  unsigned* sq_mask_ = nullptr;
  unsigned* sq_array_ = nullptr;
  unsigned* cq_head_ = nullptr;
  unsigned* cq_tail_ = nullptr;
  unsigned* cq_mask_ = nullptr;
  io_uring_cqe* cqes_ = nullptr;
  unsigned sq_entries_ = 0;
  unsigned local_tail_ = 0;  // entries filled but not yet published
  unsigned to_submit_ = 0;
};

}  // namespace lowtide::io
