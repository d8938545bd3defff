// The one way the binding runs work off the JS thread and settles a promise.
//
//   run_async<Result>(env, name, execute, resolve) -> Promise
//
// The work runs on the addon's own worker pool (napi/work_pool.h), not on
// libuv's. `execute(Result&)` runs off the JS thread. It sees only what it captured:
// inputs copied into plain values on the JS thread (or a HeldView of a JS
// buffer), never JS values. It fills the result or throws io::IoError; any
// other exception becomes INTERNAL. `resolve(Napi::Env, Result&)` runs on the
// JS thread and turns the result into the promise's value; buffers it hands
// to JS are owned by JS. A failure rejects the promise with to_js_error()
// (code, errno, offset). The captures and the result are destroyed on the JS
// thread.
#pragma once

#include <napi.h>

#include <exception>
#include <memory>
#include <new>
#include <optional>
#include <utility>

#include "io/io_error.h"
#include "napi/binding.h"

namespace lowtide::napi {
namespace detail {

template <class Result, class ExecuteFn, class ResolveFn>
class PromiseTask final : public PoolTask {
 public:
  PromiseTask(Napi::Env env, ExecuteFn&& execute, ResolveFn&& resolve)
      : deferred_(Napi::Promise::Deferred::New(env)), execute_(std::move(execute)), resolve_(std::move(resolve)) {}

  Napi::Promise promise() const { return deferred_.Promise(); }

  void execute() noexcept override {
    try {
      execute_(result_);
    } catch (const io::IoError& e) {
      error_ = e;
    } catch (const std::bad_alloc&) {
      error_ = io::IoError("INTERNAL", "out of memory");
    } catch (const std::exception& e) {
      error_ = io::IoError("INTERNAL", e.what());
    } catch (...) {
      error_ = io::IoError("INTERNAL", "unknown failure");
    }
  }

  void complete(Napi::Env env) noexcept override {
    try {
      if (error_) {
        deferred_.Reject(to_js_error(env, *error_).Value());
        return;
      }
      try {
        deferred_.Resolve(resolve_(env, result_));
      } catch (const Napi::Error& e) {
        deferred_.Reject(e.Value());
      } catch (const io::IoError& e) {
        deferred_.Reject(to_js_error(env, e).Value());
      } catch (const std::exception& e) {
        deferred_.Reject(to_js_error(env, io::IoError("INTERNAL", e.what())).Value());
      }
    } catch (...) {
      // Rejecting failed too (the environment is going away): nothing to settle.
    }
  }

 private:
  Napi::Promise::Deferred deferred_;
  ExecuteFn execute_;
  ResolveFn resolve_;
  Result result_{};
  std::optional<io::IoError> error_;
};

}  // namespace detail

template <class Result, class ExecuteFn, class ResolveFn>
Napi::Promise run_async(Napi::Env env, [[maybe_unused]] const char* name, ExecuteFn execute, ResolveFn resolve) {
  auto task = std::make_unique<detail::PromiseTask<Result, ExecuteFn, ResolveFn>>(env, std::move(execute), std::move(resolve));
  Napi::Promise promise = task->promise();
  addon_data(env).pool.submit(env, std::move(task));
  return promise;
}

}  // namespace lowtide::napi
