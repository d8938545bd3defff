// io_uring engine: one thread submits and reaps; an eventfd read armed in the
// ring wakes it when the consumer frees a slot, changes the queue depth or stops.
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <thread>

#include "io/engines.h"
#include "io/fd.h"
#include "io/uring.h"

namespace lowtide::io {
namespace {

constexpr uint64_t kWakeTag = ~uint64_t(0);
// Timers carry kTimeoutBase + a generation number (mod 2^16), so that the
// completion of a timer replaced by a shorter one is told from the current one.
constexpr uint64_t kTimeoutBase = ~uint64_t(0) - 0x20000;
constexpr uint64_t kTimeoutGenerations = 0x10000;
bool is_timeout_tag(uint64_t u) { return u >= kTimeoutBase && u < kTimeoutBase + kTimeoutGenerations; }

class UringEngine final : public ReadEngine {
 public:
  UringEngine(std::shared_ptr<BlockSource> source, std::vector<Extent> extents, const ReadConfig& config,
              std::shared_ptr<BlockSource> device)
      : ReadEngine(std::move(source), std::move(extents), config, std::move(device)) {
    int efd = eventfd(0, EFD_CLOEXEC);
    if (efd < 0) {
      int e = errno;
      throw IoError("URING_UNAVAILABLE", "eventfd failed: " + errno_text(e), e);
    }
    wake_fd_.reset(efd);
    unsigned entries = 4;
    while (entries < slot_count_ + 2) entries <<= 1;
    ring_ = std::make_unique<Uring>(entries);
    // Registered buffers spare the kernel pinning a request's pages on every
    // submission, which matters for 4 KiB pages (on a virtio disk, 2.9
    // against 1.5 GB/s at 1 MiB, QD 32). Registering pins, and so faults in,
    // the whole slab at once: for huge pages that is all their zeroing up
    // front, before the first read is issued, where lazily each page is
    // zeroed as first used. With huge pages the per-request pinning is cheap
    // (one page or two) and the total time of a read is the same either way,
    // so a huge-page slab stays unregistered and becomes resident as used.
    // A short read registers nothing either: it touches only the pages its
    // requests use, far fewer than the whole slab.
    if (long_read_ && (!slab_->huge() || !transparent_huge_pages_enabled()))
      fixed_ = ring_->register_buffer(slab_->data(), slab_->size());
    requests_.resize(slot_count_);
  }
  ~UringEngine() override { join(); }

  const char* name() const override { return "io_uring"; }

 protected:
  void launch() override {
    thread_ = std::thread([this] { run(); });
  }
  void join_threads() override {
    if (thread_.joinable()) thread_.join();
  }
  void free_resources() override { ring_.reset(); }
  // A freed slot matters only when the engine waits for one; otherwise the
  // next completion wakes it anyway, and an eventfd write per block is waste.
  void slot_freed_locked() override {
    if (starved_) {
      starved_ = false;
      wake_locked();
    }
  }
  void wake_locked() override {
    if (!wake_pending_) {
      wake_pending_ = true;
      uint64_t one = 1;
      ssize_t w = ::write(wake_fd_.get(), &one, sizeof one);
      (void)w;
    }
  }

 private:
  bool arm_wake() {
    io_uring_sqe* sqe = ring_->get_sqe();
    if (!sqe) return false;
    sqe->opcode = IORING_OP_READ;
    sqe->fd = wake_fd_.get();
    sqe->addr = reinterpret_cast<uint64_t>(&wake_buf_);
    sqe->len = sizeof wake_buf_;
    sqe->user_data = kWakeTag;
    return true;
  }

  // A timer in the ring: wakes the loop when the pacing interval has passed.
  // One is armed unless the current one fires soon enough: when the pacing
  // interval shrinks (a pause of 500 ms ends and blocks go every 0.4 ms),
  // a new, earlier timer is armed beside the old one, whose completion is
  // then ignored. (Waiting for the old one would leave the reader issuing
  // only when something else wakes it, for up to the old interval: a crawl
  // for as long as the pause that just ended.)
  void arm_timeout_if_needed(uint64_t now, uint64_t ns) {
    uint64_t deadline = now + ns;
    // 50 us of slack: a timer firing that much later is as good.
    if (timeout_armed_ && timeout_deadline_ns_ <= deadline + 50000) return;
    io_uring_sqe* sqe = ring_->get_sqe();
    if (!sqe) return;
    // The kernel reads the timespec when the entry is submitted (below, in
    // this loop iteration), so one buffer serves every timer.
    timeout_ts_.tv_sec = static_cast<long long>(ns / 1000000000ull);
    timeout_ts_.tv_nsec = static_cast<long long>(ns % 1000000000ull);
    sqe->opcode = IORING_OP_TIMEOUT;
    sqe->addr = reinterpret_cast<uint64_t>(&timeout_ts_);
    sqe->len = 1;
    sqe->off = 0;
    timeout_gen_ = (timeout_gen_ + 1) % kTimeoutGenerations;
    sqe->user_data = kTimeoutBase + timeout_gen_;
    timeout_armed_ = true;
    timeout_deadline_ns_ = deadline;
  }

  void prep(const Request& r) {
    io_uring_sqe* sqe = ring_->get_sqe();  // SQ has room for every slot plus the wake read
    sqe->opcode = fixed_ ? IORING_OP_READ_FIXED : IORING_OP_READ;
    sqe->fd = r.fd;
    sqe->off = r.aoffset + r.done;
    sqe->addr = reinterpret_cast<uint64_t>(slot_data(r.slot) + r.done);
    sqe->len = r.alength - r.done;
    sqe->buf_index = 0;
    sqe->user_data = r.slot;
  }

  void run() {
    bool wake_armed = false;
    std::vector<uint32_t> resubmit;
    try {
      for (;;) {
        {
          std::lock_guard<std::mutex> lk(mu_);
          if (!wake_armed) wake_armed = arm_wake();
          for (uint32_t slot : resubmit) prep(requests_[slot]);
          resubmit.clear();
          uint64_t t = now_ns();
          uint64_t wait_ns = 0;
          bool paced = false;
          while (can_submit_locked()) {
            if (!pace_allows_locked(t, wait_ns)) {
              paced = true;
              break;
            }
            Request r = next_request_locked();
            note_issue_locked(t);
            r.submit_ns = t;
            requests_[r.slot] = r;
            prep(requests_[r.slot]);
          }
          if (paced) arm_timeout_if_needed(t, wait_ns);
          if (maybe_finish_locked()) break;
          starved_ = !stop_requested_ && !error_ && in_flight_ < queue_depth_ && free_slots_.empty() && !cursor_exhausted_locked();
        }
        ring_->submit_and_wait(1);
        uint64_t now = now_ns();
        std::lock_guard<std::mutex> lk(mu_);
        ring_->for_each_cqe([&](io_uring_cqe* cqe) {
          if (cqe->user_data == kWakeTag) {
            wake_armed = false;
            wake_pending_ = false;
            return;
          }
          if (is_timeout_tag(cqe->user_data)) {
            // Only the latest timer counts; an older one that fires is a spare wake-up.
            if (cqe->user_data == kTimeoutBase + timeout_gen_) timeout_armed_ = false;
            return;
          }
          Request& r = requests_[uint32_t(cqe->user_data)];
          if (on_result_locked(r, cqe->res, now)) resubmit.push_back(r.slot);
        });
      }
    } catch (const IoError& e) {
      drain_after_failure(e);
    }
  }

  // io_uring_enter itself failed. Reads may still target our buffers: keep
  // reaping until none is in flight; if the ring is unusable, keep the buffer
  // memory alive for good rather than free it under the kernel.
  void drain_after_failure(const IoError& e) {
    std::unique_lock<std::mutex> lk(mu_);
    fail_locked(e);
    int attempts = 0;
    while (in_flight_ > 0 && attempts < 1000) {
      lk.unlock();
      bool ok = true;
      try {
        ring_->submit_and_wait(1);
      } catch (const IoError&) {
        ok = false;
      }
      uint64_t now = now_ns();
      lk.lock();
      ring_->for_each_cqe([&](io_uring_cqe* cqe) {
        if (cqe->user_data == kWakeTag || is_timeout_tag(cqe->user_data)) return;
        Request& r = requests_[uint32_t(cqe->user_data)];
        if (on_result_locked(r, cqe->res, now)) {
          --in_flight_;  // give up on the remainder
          slot_state_[r.slot] = kFree;
          free_slots_.push_back(r.slot);
        }
      });
      if (!ok) ++attempts;
    }
    if (in_flight_ > 0) {
      new std::shared_ptr<AlignedMemory>(slab_);  // deliberately leaked, see above
      in_flight_ = 0;
    }
    maybe_finish_locked();
  }

  UniqueFd wake_fd_;
  uint64_t wake_buf_ = 0;
  bool wake_pending_ = false;
  bool starved_ = false;
  bool timeout_armed_ = false;
  uint64_t timeout_deadline_ns_ = 0;
  uint64_t timeout_gen_ = 0;
  __kernel_timespec timeout_ts_{};
  bool fixed_ = false;
  std::vector<Request> requests_;
  std::unique_ptr<Uring> ring_;  // destroyed before wake_buf_ and the requests
  std::thread thread_;
};

}  // namespace

std::unique_ptr<ReadEngine> make_uring_engine(std::shared_ptr<BlockSource> source, std::vector<Extent> extents,
                                              const ReadConfig& config, std::shared_ptr<BlockSource> device) {
  return std::make_unique<UringEngine>(std::move(source), std::move(extents), config, std::move(device));
}

}  // namespace lowtide::io
