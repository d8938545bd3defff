// Thread-pool engine: up to queue_depth threads each doing one pread at a time.
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <thread>

#include "io/engines.h"

namespace lowtide::io {
namespace {

class ThreadEngine final : public ReadEngine {
 public:
  ThreadEngine(std::shared_ptr<BlockSource> source, std::vector<Extent> extents, const ReadConfig& config,
               std::shared_ptr<BlockSource> device)
      : ReadEngine(std::move(source), std::move(extents), config, std::move(device)) {}
  ~ThreadEngine() override { join(); }

  const char* name() const override { return "threads"; }

 protected:
  void launch() override {
    std::lock_guard<std::mutex> lk(mu_);
    grow_locked();
  }
  void wake_locked() override {
    grow_locked();
    cv_.notify_all();
  }
  void join_threads() override {
    std::vector<std::thread> threads;
    {
      std::lock_guard<std::mutex> lk(mu_);
      threads.swap(threads_);
    }
    for (auto& t : threads) t.join();
  }

 private:
  void grow_locked() {
    if (finished_ || joined_) return;
    while (threads_.size() < queue_depth_) threads_.emplace_back([this] { worker(); });
  }

  void worker() {
    std::unique_lock<std::mutex> lk(mu_);
    for (;;) {
      if (finished_) return;
      if (can_submit_locked()) {
        uint64_t t = now_ns();
        uint64_t wait_ns = 0;
        if (!pace_allows_locked(t, wait_ns)) {
          cv_.wait_for(lk, std::chrono::nanoseconds(wait_ns));
          continue;
        }
        Request r = next_request_locked();
        note_issue_locked(t);
        lk.unlock();
        r.submit_ns = now_ns();
        int64_t res;
        bool again;
        do {
          ssize_t n;
          do {
            n = ::pread(r.fd, slot_data(r.slot) + r.done, r.alength - r.done, off_t(r.aoffset + r.done));
          } while (n < 0 && errno == EINTR);
          res = n < 0 ? -int64_t(errno) : int64_t(n);
          uint64_t now = now_ns();
          lk.lock();
          again = on_result_locked(r, res, now);
          if (again) lk.unlock();
        } while (again);
        if (maybe_finish_locked()) {
          cv_.notify_all();
          return;
        }
        continue;
      }
      if (maybe_finish_locked()) {
        cv_.notify_all();
        return;
      }
      cv_.wait(lk);
    }
  }

  std::condition_variable cv_;
  std::vector<std::thread> threads_;
};

}  // namespace

std::unique_ptr<ReadEngine> make_thread_engine(std::shared_ptr<BlockSource> source, std::vector<Extent> extents,
                                               const ReadConfig& config, std::shared_ptr<BlockSource> device) {
  return std::make_unique<ThreadEngine>(std::move(source), std::move(extents), config, std::move(device));
}

}  // namespace lowtide::io
