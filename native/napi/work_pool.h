// The addon's own worker threads. Hashing, compression, chunk writes, probe
// reads and parsing run here, not on libuv's thread pool, which the host
// process needs for its own file, DNS and crypto calls.
//
// Tasks are submitted on the JS thread, executed on a pool thread, and
// completed back on the JS thread (through one thread-safe function, inside a
// callback scope, so promise reactions run right after). While tasks are
// pending the pool keeps the event loop alive; idle, it does not. Threads
// start on the first task; the number can change at any time.
#pragma once

#include <napi.h>

#include <cstdint>
#include <memory>

namespace lowtide::napi {

class PoolTask {
 public:
  virtual ~PoolTask() = default;
  // Off the JS thread. Must not throw.
  virtual void execute() noexcept = 0;
  // On the JS thread, inside a handle scope. Must not throw.
  virtual void complete(Napi::Env env) noexcept = 0;
};

class WorkPool {
 public:
  explicit WorkPool(Napi::Env env);
  ~WorkPool();
  WorkPool(const WorkPool&) = delete;
  WorkPool& operator=(const WorkPool&) = delete;

  // JS thread only.
  void submit(Napi::Env env, std::unique_ptr<PoolTask> task);
  // Threads to run (1..256). More start at once; extra ones end after their task.
  void set_threads(unsigned n);
  unsigned threads() const;
  uint64_t executed() const;

  // The default size: the number of online CPUs, at least 2 and at most 16.
  static unsigned default_threads();

  struct Shared;

 private:
  std::shared_ptr<Shared> s_;
  napi_env env_ = nullptr;
};

}  // namespace lowtide::napi
