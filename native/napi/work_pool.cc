#include "napi/work_pool.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

namespace lowtide::napi {

struct WorkPool::Shared {
  std::mutex m;
  std::condition_variable cv;
  std::deque<std::unique_ptr<PoolTask>> queue;  // waiting to execute
  std::deque<std::unique_ptr<PoolTask>> done;   // executed, waiting to complete
  std::vector<std::thread> threads;
  unsigned target = WorkPool::default_threads();
  unsigned live = 0;
  bool stopping = false;
  std::atomic<uint64_t> executed{0};
  // Null once Node has finalized it (environment teardown).
  napi_threadsafe_function tsfn = nullptr;
  // JS thread only.
  size_t pending = 0;
  napi_ref resource = nullptr;
  napi_async_context async_context = nullptr;

  void spawn_locked() {
    while (live < target) {
      ++live;
      threads.emplace_back([this] { run(); });
    }
  }

  void run() {
    std::unique_lock<std::mutex> lk(m);
    for (;;) {
      cv.wait(lk, [this] { return stopping || live > target || !queue.empty(); });
      if (stopping) return;
      if (live > target) {
        --live;
        return;
      }
      std::unique_ptr<PoolTask> task = std::move(queue.front());
      queue.pop_front();
      lk.unlock();
      task->execute();
      executed.fetch_add(1, std::memory_order_relaxed);
      lk.lock();
      bool first = done.empty();
      done.push_back(std::move(task));
      if (first && tsfn != nullptr) napi_call_threadsafe_function(tsfn, nullptr, napi_tsfn_nonblocking);
    }
  }

  // Ends every thread (after the task each one is running) and waits for them.
  void stop_and_join() {
    std::vector<std::thread> ts;
    {
      std::lock_guard<std::mutex> lk(m);
      stopping = true;
      ts.swap(threads);
    }
    cv.notify_all();
    for (auto& t : ts)
      if (t.joinable()) t.join();
  }

  // On the JS thread: completes every executed task.
  static void call_js(napi_env env, napi_value, void* context, void*) {
    Shared* s = static_cast<std::shared_ptr<Shared>*>(context)->get();
    if (env == nullptr) return;  // teardown: nothing to settle
    std::deque<std::unique_ptr<PoolTask>> batch;
    {
      std::lock_guard<std::mutex> lk(s->m);
      batch.swap(s->done);
    }
    if (batch.empty()) return;
    // A callback scope, as for any native callback into JS: when it closes,
    // the promise reactions and ticks the completions queued run.
    napi_value resource = nullptr;
    napi_callback_scope scope = nullptr;
    bool scoped = s->resource != nullptr && napi_get_reference_value(env, s->resource, &resource) == napi_ok &&
                  napi_open_callback_scope(env, resource, s->async_context, &scope) == napi_ok;
    for (auto& task : batch) {
      napi_handle_scope hs = nullptr;
      bool opened = napi_open_handle_scope(env, &hs) == napi_ok;
      task->complete(Napi::Env(env));
      task.reset();
      if (opened) napi_close_handle_scope(env, hs);
    }
    if (scoped) napi_close_callback_scope(env, scope);
    s->pending -= std::min(s->pending, batch.size());
    if (s->pending == 0 && s->tsfn != nullptr) napi_unref_threadsafe_function(env, s->tsfn);
  }

  static void finalize(napi_env env, void* data, void*) {
    auto* holder = static_cast<std::shared_ptr<Shared>*>(data);
    Shared* s = holder->get();
    {
      std::lock_guard<std::mutex> lk(s->m);
      s->tsfn = nullptr;
    }
    if (env != nullptr) {
      if (s->resource != nullptr) napi_delete_reference(env, s->resource);
      if (s->async_context != nullptr) napi_async_destroy(env, s->async_context);
    }
    s->resource = nullptr;
    s->async_context = nullptr;
    delete holder;
  }

  static void cleanup_hook(void* arg) { static_cast<Shared*>(arg)->stop_and_join(); }
};

unsigned WorkPool::default_threads() {
  unsigned n = std::thread::hardware_concurrency();
  return std::clamp(n, 2u, 16u);
}

WorkPool::WorkPool(Napi::Env env) : s_(std::make_shared<Shared>()) {
  napi_value name = Napi::String::New(env, "lowtide");
  napi_value resource = Napi::Object::New(env);
  if (napi_create_reference(env, resource, 1, &s_->resource) != napi_ok) s_->resource = nullptr;
  if (napi_async_init(env, resource, name, &s_->async_context) != napi_ok) s_->async_context = nullptr;
  auto* holder = new std::shared_ptr<Shared>(s_);
  napi_threadsafe_function tsfn = nullptr;
  napi_status st =
      napi_create_threadsafe_function(env, nullptr, nullptr, name, 0, 1, holder, &Shared::finalize, holder, &Shared::call_js, &tsfn);
  if (st != napi_ok) {
    delete holder;
    throw Napi::Error::New(env, "lowtide: cannot create the worker pool's completion queue");
  }
  s_->tsfn = tsfn;
  napi_unref_threadsafe_function(env, tsfn);
  // Registered after the thread-safe function, so it runs before Node
  // finalizes it at teardown: no thread is left to call it.
  napi_add_env_cleanup_hook(env, &Shared::cleanup_hook, s_.get());
  env_ = env;
}

WorkPool::~WorkPool() {
  s_->stop_and_join();
  napi_remove_env_cleanup_hook(env_, &Shared::cleanup_hook, s_.get());
  napi_threadsafe_function tsfn;
  {
    std::lock_guard<std::mutex> lk(s_->m);
    tsfn = s_->tsfn;
  }
  if (tsfn != nullptr) napi_release_threadsafe_function(tsfn, napi_tsfn_abort);
}

void WorkPool::submit(Napi::Env env, std::unique_ptr<PoolTask> task) {
  {
    std::lock_guard<std::mutex> lk(s_->m);
    s_->spawn_locked();
    s_->queue.push_back(std::move(task));
  }
  s_->cv.notify_one();
  if (s_->pending++ == 0 && s_->tsfn != nullptr) napi_ref_threadsafe_function(env, s_->tsfn);
}

void WorkPool::set_threads(unsigned n) {
  {
    std::lock_guard<std::mutex> lk(s_->m);
    s_->target = std::clamp(n, 1u, 256u);
    // Grow at once if running; shrinking lets extra threads end after their task.
    if (s_->live > 0) s_->spawn_locked();
  }
  s_->cv.notify_all();
}

unsigned WorkPool::threads() const {
  std::lock_guard<std::mutex> lk(s_->m);
  return s_->target;
}

uint64_t WorkPool::executed() const { return s_->executed.load(std::memory_order_relaxed); }

}  // namespace lowtide::napi
