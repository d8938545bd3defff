// The one way the binding runs work off the JS thread and settles a promise.
//
//   run_async<Result>(env, name, execute, resolve) -> Promise
//
// `execute(Result&)` runs off the JS thread. It sees only what it captured:
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
#include <new>
#include <optional>
#include <utility>

#include "io/io_error.h"
#include "napi/binding.h"

namespace lowtide::napi {
namespace detail {

template <class Result, class ExecuteFn, class ResolveFn>
class PromiseWorker final : public Napi::AsyncWorker {
 public:
  PromiseWorker(Napi::Env env, const char* name, ExecuteFn&& execute, ResolveFn&& resolve)
      : Napi::AsyncWorker(env, name),
        deferred_(Napi::Promise::Deferred::New(env)),
        execute_(std::move(execute)),
        resolve_(std::move(resolve)) {}

  Napi::Promise promise() const { return deferred_.Promise(); }

 private:
  // Off the JS thread.
  void Execute() override {
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

  // On the JS thread. Failures are kept in `error_`, not in the AsyncWorker's
  // message, so OnOK runs in every case.
  void OnOK() override {
    Napi::Env env = Env();
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
  }

  Napi::Promise::Deferred deferred_;
  ExecuteFn execute_;
  ResolveFn resolve_;
  Result result_{};
  std::optional<io::IoError> error_;
};

}  // namespace detail

template <class Result, class ExecuteFn, class ResolveFn>
Napi::Promise run_async(Napi::Env env, const char* name, ExecuteFn execute, ResolveFn resolve) {
  auto* worker = new detail::PromiseWorker<Result, ExecuteFn, ResolveFn>(env, name, std::move(execute), std::move(resolve));
  Napi::Promise promise = worker->promise();
  worker->Queue();
  return promise;
}

}  // namespace lowtide::napi
