#include "io/uring.h"

#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>
#include <cerrno>
#include <cstring>

#include "io/io_error.h"

namespace lowtide::io {
namespace {

int sys_setup(unsigned entries, io_uring_params* p) { return static_cast<int>(syscall(__NR_io_uring_setup, entries, p)); }
int sys_enter(int fd, unsigned to_submit, unsigned min_complete, unsigned flags) {
  return static_cast<int>(syscall(__NR_io_uring_enter, fd, to_submit, min_complete, flags, nullptr, 0));
}
int sys_register(int fd, unsigned op, const void* arg, unsigned nr) {
  return static_cast<int>(syscall(__NR_io_uring_register, fd, op, arg, nr));
}

template <typename T>
T* at(void* base, unsigned off) {
  return reinterpret_cast<T*>(static_cast<char*>(base) + off);
}

}  // namespace

Uring::Uring(unsigned entries) {
  io_uring_params p;
  std::memset(&p, 0, sizeof p);
  int fd = sys_setup(entries, &p);
  if (fd < 0) {
    int e = errno;
    throw IoError("URING_UNAVAILABLE", "io_uring_setup failed: " + errno_text(e), e);
  }
  fd_.reset(fd);
  sq_entries_ = p.sq_entries;

  sq_len_ = p.sq_off.array + p.sq_entries * sizeof(unsigned);
  cq_len_ = p.cq_off.cqes + p.cq_entries * sizeof(io_uring_cqe);
  bool single = (p.features & IORING_FEAT_SINGLE_MMAP) != 0;
  if (single) {
    if (cq_len_ > sq_len_) sq_len_ = cq_len_;
    cq_len_ = sq_len_;
  }
  sq_ptr_ = mmap(nullptr, sq_len_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQ_RING);
  if (sq_ptr_ == MAP_FAILED) {
    sq_ptr_ = nullptr;
    int e = errno;
    throw IoError("URING_UNAVAILABLE", "mmap of the io_uring SQ ring failed: " + errno_text(e), e);
  }
  if (single) {
    cq_ptr_ = sq_ptr_;
  } else {
    cq_ptr_ = mmap(nullptr, cq_len_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_CQ_RING);
    if (cq_ptr_ == MAP_FAILED) {
      cq_ptr_ = nullptr;
      int e = errno;
      munmap(sq_ptr_, sq_len_);
      sq_ptr_ = nullptr;
      throw IoError("URING_UNAVAILABLE", "mmap of the io_uring CQ ring failed: " + errno_text(e), e);
    }
  }
  sqes_len_ = p.sq_entries * sizeof(io_uring_sqe);
  void* sqes = mmap(nullptr, sqes_len_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQES);
  if (sqes == MAP_FAILED) {
    int e = errno;
    if (cq_ptr_ != sq_ptr_) munmap(cq_ptr_, cq_len_);
    munmap(sq_ptr_, sq_len_);
    sq_ptr_ = cq_ptr_ = nullptr;
    throw IoError("URING_UNAVAILABLE", "mmap of the io_uring SQEs failed: " + errno_text(e), e);
  }
  sqes_ = static_cast<io_uring_sqe*>(sqes);

  sq_head_ = at<unsigned>(sq_ptr_, p.sq_off.head);
  sq_tail_ = at<unsigned>(sq_ptr_, p.sq_off.tail);
  sq_mask_ = at<unsigned>(sq_ptr_, p.sq_off.ring_mask);
  sq_array_ = at<unsigned>(sq_ptr_, p.sq_off.array);
  cq_head_ = at<unsigned>(cq_ptr_, p.cq_off.head);
  cq_tail_ = at<unsigned>(cq_ptr_, p.cq_off.tail);
  cq_mask_ = at<unsigned>(cq_ptr_, p.cq_off.ring_mask);
  cqes_ = at<io_uring_cqe>(cq_ptr_, p.cq_off.cqes);
  local_tail_ = *sq_tail_;
}

Uring::~Uring() {
  // Closing the ring fd (UniqueFd) cancels whatever is still pending; callers
  // drain every request that targets their own buffers before destroying us.
  if (sqes_) munmap(sqes_, sqes_len_);
  if (cq_ptr_ && cq_ptr_ != sq_ptr_) munmap(cq_ptr_, cq_len_);
  if (sq_ptr_) munmap(sq_ptr_, sq_len_);
}

bool Uring::available() {
  io_uring_params p;
  std::memset(&p, 0, sizeof p);
  int fd = sys_setup(2, &p);
  if (fd < 0) return false;
  ::close(fd);
  return true;
}

io_uring_sqe* Uring::get_sqe() {
  unsigned head = __atomic_load_n(sq_head_, __ATOMIC_ACQUIRE);
  if (local_tail_ - head >= sq_entries_) return nullptr;
  unsigned idx = local_tail_ & *sq_mask_;
  io_uring_sqe* sqe = &sqes_[idx];
  std::memset(sqe, 0, sizeof *sqe);
  sq_array_[idx] = idx;
  ++local_tail_;
  ++to_submit_;
  return sqe;
}

unsigned Uring::submit_and_wait(unsigned wait_nr) {
  __atomic_store_n(sq_tail_, local_tail_, __ATOMIC_RELEASE);
  unsigned submitted_total = 0;
  for (;;) {
    unsigned flags = wait_nr ? IORING_ENTER_GETEVENTS : 0;
    int r = sys_enter(fd_.get(), to_submit_, wait_nr, flags);
    if (r < 0) {
      int e = errno;
      if (e == EINTR) {
        if (to_submit_ == 0 && wait_nr) continue;
        continue;
      }
      if (e == EAGAIN || e == EBUSY) {
        // Completion queue pressure: let the caller reap and try again.
        return submitted_total;
      }
      throw IoError("IO_ERROR", "io_uring_enter failed: " + errno_text(e), e);
    }
    submitted_total += static_cast<unsigned>(r);
    to_submit_ -= static_cast<unsigned>(r);
    return submitted_total;
  }
}

bool Uring::register_buffer(void* base, size_t len) {
  iovec iov{base, len};
  return sys_register(fd_.get(), IORING_REGISTER_BUFFERS, &iov, 1) == 0;
}

}  // namespace lowtide::io
