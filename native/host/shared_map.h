// A small file mapped MAP_SHARED: counters that other processes read while
// this one updates them (the canary jobs' registry, lib/throttle/job-registry.ts).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace lowtide::host {

class SharedMap {
 public:
  // Maps the first `size` bytes of the file at `path` (which must hold them),
  // read-write or read-only. Throws io::IoError (OPEN_FAILED, MAP_FAILED).
  static std::shared_ptr<SharedMap> open(const std::string& path, size_t size, bool writable);
  ~SharedMap();
  SharedMap(const SharedMap&) = delete;
  SharedMap& operator=(const SharedMap&) = delete;

  unsigned char* data() const { return data_; }
  size_t size() const { return size_; }
  bool writable() const { return writable_; }
  // The mapping that holds `p` (its first byte), if it is still alive.
  static std::shared_ptr<SharedMap> find(const void* p);

 private:
  SharedMap(unsigned char* data, size_t size, bool writable) : data_(data), size_(size), writable_(writable) {}
  unsigned char* data_;
  size_t size_;
  bool writable_;
};

}  // namespace lowtide::host
