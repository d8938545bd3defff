// A guest disk: a qcow2 image and its backing chain (qcow2 or raw layers),
// read through their mappings. Plain C++ over fat::ByteReaders; opening the
// files (and deciding which backing files may be followed) is open.h's job.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "fat/byte_reader.h"
#include "qcow2/image.h"

namespace lowtide::qcow2 {

constexpr uint32_t kMaxBackingDepth = 16;

struct Layer {
  std::string path;
  std::string format;  // "qcow2" or "raw"
  std::unique_ptr<fat::ByteReader> file;
  std::unique_ptr<Image> image;  // null for a raw layer
  uint64_t size = 0;             // guest bytes this layer covers
};

// Thread-safe: map() and read() serialize on a mutex (tables are cached).
class Chain final : public fat::ByteReader {
 public:
  // Layer 0 is the image named; layer i+1 is layer i's backing file.
  void add_qcow2(std::unique_ptr<fat::ByteReader> file, const std::string& path);
  void add_raw(std::unique_ptr<fat::ByteReader> file, const std::string& path);

  const std::vector<Layer>& layers() const { return layers_; }
  uint64_t size() const override { return layers_.empty() ? 0 : layers_[0].size; }

  // The guest range [offset, offset + length) resolved through the chain:
  // Data/Compressed name the layer holding the bytes, Zero reads as zeros and
  // Unallocated (in no layer) reads as zeros too. Neighbours are merged.
  std::vector<Segment> map(uint64_t offset, uint64_t length);

  // Guest bytes (ByteReader): data from the layers' files, compressed
  // clusters decompressed, everything else zeros.
  void read(uint64_t offset, uint8_t* dst, size_t len) override;

  // Decompresses the bytes of one Compressed segment into `dst` (s.length bytes).
  void read_compressed(const Segment& s, uint8_t* dst);

  // The persistent dirty bitmaps of the image named (layer 0), and the guest
  // ranges one of them marks (NOT_FOUND naming the bitmaps there are).
  std::vector<Bitmap> bitmaps();
  std::vector<std::pair<uint64_t, uint64_t>> bitmap_extents(const std::string& name);

 private:
  void resolve(uint32_t layer, uint64_t offset, uint64_t length, std::vector<Segment>& out);
  void read_compressed_locked(const Segment& s, uint8_t* dst);

  std::vector<Layer> layers_;
  std::mutex mu_;
  // The last decompressed cluster.
  uint32_t cached_layer_ = UINT32_MAX;
  uint64_t cached_host_ = 0;
  std::vector<uint8_t> cached_;
};

}  // namespace lowtide::qcow2
