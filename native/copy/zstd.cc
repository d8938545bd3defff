#include "copy/zstd.h"

#include <dlfcn.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <type_traits>
#include <utility>

namespace lowtide::copy {
namespace {

// zstd's stable API (zstd.h, "simple API" and "streaming decompression"),
// declared by hand: the buffers of the streaming API are plain structs.
struct InBuffer {
  const void* src;
  size_t size;
  size_t pos;
};
struct OutBuffer {
  void* dst;
  size_t size;
  size_t pos;
};
constexpr unsigned long long kContentSizeUnknown = 0ULL - 1;
constexpr unsigned long long kContentSizeError = 0ULL - 2;

struct Api {
  void* (*createCCtx)();
  size_t (*freeCCtx)(void*);
  size_t (*compressCCtx)(void*, void*, size_t, const void*, size_t, int);
  size_t (*compressBound)(size_t);
  void* (*createDCtx)();
  size_t (*freeDCtx)(void*);
  size_t (*decompressDCtx)(void*, void*, size_t, const void*, size_t);
  unsigned long long (*getFrameContentSize)(const void*, size_t);
  size_t (*decompressStream)(void*, OutBuffer*, InBuffer*);
  size_t (*DCtx_reset)(void*, int);
  unsigned (*isError)(size_t);
  const char* (*getErrorName)(size_t);
  const char* (*versionString)();
  std::string error;  // empty when loaded
};

const Api& api() {
  static const Api a = [] {
    Api r{};
    void* h = dlopen("libzstd.so.1", RTLD_NOW | RTLD_LOCAL);
    if (h == nullptr) {
      const char* e = dlerror();
      r.error = std::string("cannot load libzstd.so.1: ") + (e ? e : "unknown error");
      return r;
    }
    bool ok = true;
    auto get = [&](auto& fn, const char* name) {
      void* p = dlsym(h, name);
      if (p == nullptr) {
        ok = false;
        if (r.error.empty()) r.error = std::string("libzstd.so.1 lacks ") + name;
      }
      fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(p);
    };
    get(r.createCCtx, "ZSTD_createCCtx");
    get(r.freeCCtx, "ZSTD_freeCCtx");
    get(r.compressCCtx, "ZSTD_compressCCtx");
    get(r.compressBound, "ZSTD_compressBound");
    get(r.createDCtx, "ZSTD_createDCtx");
    get(r.freeDCtx, "ZSTD_freeDCtx");
    get(r.decompressDCtx, "ZSTD_decompressDCtx");
    get(r.getFrameContentSize, "ZSTD_getFrameContentSize");
    get(r.decompressStream, "ZSTD_decompressStream");
    get(r.DCtx_reset, "ZSTD_DCtx_reset");
    get(r.isError, "ZSTD_isError");
    get(r.getErrorName, "ZSTD_getErrorName");
    get(r.versionString, "ZSTD_versionString");
    if (!ok) dlclose(h);  // r.error says which symbol was missing
    return r;
  }();
  return a;
}

const Api& loaded() {
  const Api& a = api();
  if (!a.error.empty()) throw std::runtime_error(a.error);
  return a;
}

void check(const Api& a, size_t rc, const char* what) {
  if (a.isError(rc)) throw std::runtime_error(std::string(what) + ": " + a.getErrorName(rc));
}

// One context of each kind per thread (the libuv pool's threads live as long
// as the process), freed when the thread ends.
struct Contexts {
  void* c = nullptr;
  void* d = nullptr;
  ~Contexts() {
    const Api& a = api();
    if (c) a.freeCCtx(c);
    if (d) a.freeDCtx(d);
  }
};
thread_local Contexts tls;

struct Malloced {
  unsigned char* p = nullptr;
  ~Malloced() { std::free(p); }
  unsigned char* release() { return std::exchange(p, nullptr); }
};

}  // namespace

bool zstd_available(std::string* why) {
  const Api& a = api();
  if (why) *why = a.error;
  return a.error.empty();
}

std::string zstd_version() {
  const Api& a = api();
  return a.error.empty() ? std::string(a.versionString()) : std::string();
}

size_t zstd_compress_bound(size_t len) { return loaded().compressBound(len); }

size_t zstd_compress_into(const unsigned char* src, size_t len, unsigned char* dst, size_t cap, int level) {
  const Api& a = loaded();
  if (tls.c == nullptr && (tls.c = a.createCCtx()) == nullptr) throw std::runtime_error("ZSTD_createCCtx failed");
  size_t n = a.compressCCtx(tls.c, dst, cap, src, len, level);
  check(a, n, "zstd compression");
  return n;
}

ZstdOutput zstd_compress(const unsigned char* src, size_t len, int level) {
  const Api& a = loaded();
  size_t cap = a.compressBound(len);
  Malloced out{static_cast<unsigned char*>(std::malloc(cap ? cap : 1))};
  if (out.p == nullptr) throw std::bad_alloc();
  size_t n = zstd_compress_into(src, len, out.p, cap, level);
  // Give back the unused tail of the bound (compressed data is usually smaller).
  auto* shrunk = static_cast<unsigned char*>(std::realloc(out.p, n ? n : 1));
  if (shrunk != nullptr) out.p = shrunk;
  return {out.release(), n};
}

size_t zstd_decompress_into(const unsigned char* src, size_t len, unsigned char* dst, size_t cap) {
  const Api& a = loaded();
  if (tls.d == nullptr && (tls.d = a.createDCtx()) == nullptr) throw std::runtime_error("ZSTD_createDCtx failed");
  size_t n = a.decompressDCtx(tls.d, dst, cap, src, len);
  check(a, n, "zstd decompression");
  return n;
}

void zstd_decompress_exact(const unsigned char* src, size_t len, unsigned char* dst, size_t size) {
  const Api& a = loaded();
  if (tls.d == nullptr && (tls.d = a.createDCtx()) == nullptr) throw std::runtime_error("ZSTD_createDCtx failed");
  check(a, a.DCtx_reset(tls.d, 1 /* ZSTD_reset_session_only */), "zstd reset");
  InBuffer in{src, len, 0};
  OutBuffer o{dst, size, 0};
  while (o.pos < o.size) {
    const size_t before_in = in.pos, before_out = o.pos;
    size_t rc = a.decompressStream(tls.d, &o, &in);
    check(a, rc, "zstd decompression");
    if (rc == 0 && o.pos < o.size) throw std::runtime_error("zstd decompression: the frame ends before the expected size");
    if (in.pos == before_in && o.pos == before_out) throw std::runtime_error("zstd decompression: the input ends inside a frame");
  }
}

ZstdOutput zstd_decompress(const unsigned char* src, size_t len, size_t max_size) {
  const Api& a = loaded();
  if (tls.d == nullptr && (tls.d = a.createDCtx()) == nullptr) throw std::runtime_error("ZSTD_createDCtx failed");
  unsigned long long size = a.getFrameContentSize(src, len);
  if (size == kContentSizeError) throw std::runtime_error("zstd decompression: not a zstd frame");
  if (size != kContentSizeUnknown && size <= max_size) {
    // The usual case: one frame that records its size.
    Malloced out{static_cast<unsigned char*>(std::malloc(size ? size : 1))};
    if (out.p == nullptr) throw std::bad_alloc();
    size_t n = a.decompressDCtx(tls.d, out.p, size, src, len);
    if (!a.isError(n) && n == size) return {out.release(), n};
    // More than one frame (or a lying header): decode as a stream below.
  } else if (size != kContentSizeUnknown) {
    throw std::runtime_error("zstd decompression: the frame says " + std::to_string(size) + " bytes, more than the " +
                             std::to_string(max_size) + " bytes expected");
  }
  // Streaming: unknown size or several frames; grow up to max_size.
  check(a, a.DCtx_reset(tls.d, 1 /* ZSTD_reset_session_only */), "zstd reset");
  size_t cap = std::min<size_t>(max_size, std::max<size_t>(len * 4, 64 * 1024));
  Malloced out{static_cast<unsigned char*>(std::malloc(cap ? cap : 1))};
  if (out.p == nullptr) throw std::bad_alloc();
  InBuffer in{src, len, 0};
  OutBuffer o{out.p, cap, 0};
  for (;;) {
    size_t rc = a.decompressStream(tls.d, &o, &in);
    check(a, rc, "zstd decompression");
    if (in.pos == in.size && rc == 0) break;  // all input used, last frame complete
    if (o.pos == o.size) {
      if (o.size >= max_size)
        throw std::runtime_error("zstd decompression: more than the " + std::to_string(max_size) + " bytes expected");
      size_t grown = std::min<size_t>(max_size, o.size * 2);
      auto* p = static_cast<unsigned char*>(std::realloc(out.p, grown));
      if (p == nullptr) throw std::bad_alloc();
      out.p = p;
      o.dst = p;
      o.size = grown;
    } else if (in.pos == in.size) {
      throw std::runtime_error("zstd decompression: the input ends inside a frame");
    }
  }
  return {out.release(), o.pos};
}

}  // namespace lowtide::copy
