// qcow2 (versions 2 and 3) as QEMU's docs/interop/qcow2.txt defines it: the
// header and its extensions, the L1/L2 tables (standard and extended L2 with
// subclusters) and compressed clusters. Plain C++ over a fat::ByteReader: no
// file I/O and no Node-API types, so it can be fuzzed and tested alone.
//
// Every field read from the file is validated before use: cluster_bits 9..21,
// table offsets cluster-aligned, past the header cluster and inside the file,
// counts checked against sizes before they are multiplied. Failures throw
// io::IoError with code QCOW2_CORRUPT, or UNSUPPORTED naming the feature
// (encryption, external data file, an image marked corrupt, unknown bits).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "fat/byte_reader.h"

namespace lowtide::qcow2 {

constexpr uint32_t kMinClusterBits = 9;
constexpr uint32_t kMaxClusterBits = 21;
// Largest virtual size accepted: byte offsets must stay exact in a JS number.
constexpr uint64_t kMaxVirtualSize = uint64_t(1) << 52;
// Largest L1 table QEMU writes (32 MiB of entries).
constexpr uint64_t kMaxL1Entries = (uint64_t(32) << 20) / 8;
constexpr uint32_t kMaxBackingNameBytes = 1023;

// True when the first bytes (at least 4) are qcow2's magic "QFI\xfb".
bool has_magic(const uint8_t* p, size_t n);

enum class CompressionType : uint8_t { Deflate = 0, Zstd = 1 };

struct Header {
  uint32_t version = 0;
  uint32_t cluster_bits = 0;
  uint64_t cluster_size = 0;
  uint64_t virtual_size = 0;
  uint64_t backing_offset = 0;
  uint32_t backing_size = 0;
  uint32_t crypt_method = 0;
  uint32_t l1_size = 0;
  uint64_t l1_offset = 0;
  uint64_t refcount_table_offset = 0;
  uint32_t refcount_table_clusters = 0;
  uint32_t nb_snapshots = 0;
  uint64_t snapshots_offset = 0;
  uint64_t incompatible = 0;
  uint64_t compatible = 0;
  uint64_t autoclear = 0;
  uint32_t refcount_order = 4;
  uint32_t header_length = 72;
  CompressionType compression = CompressionType::Deflate;
  bool dirty = false;
  bool extended_l2 = false;
  std::string backing_file;    // empty: no backing file
  std::string backing_format;  // from the backing-format extension; empty when absent
  bool bitmaps_extension = false;
  // The bitmaps extension (valid only while autoclear bit 0 is set).
  uint32_t nb_bitmaps = 0;
  uint64_t bitmap_directory_size = 0;
  uint64_t bitmap_directory_offset = 0;
  // Derived.
  uint32_t l2_entry_bytes = 8;   // 16 with extended L2
  uint64_t l2_entries = 0;       // entries per L2 table
  uint64_t subcluster_size = 0;  // cluster_size / 32 with extended L2, else cluster_size
};

// Parses and validates the header of an image whose file is `file`.
// `name` is used in messages.
Header parse_header(fat::ByteReader& file, const std::string& name);

// What a guest range of one image is.
enum class Kind : uint8_t {
  Unallocated = 0,  // not in this image: the backing file's, or zeros
  Zero = 1,         // reads as zeros
  Data = 2,         // `host` is the file offset of its first byte
  Compressed = 3,   // part of one compressed cluster: `host`/`csize` locate the compressed bytes, `inner` the offset in the cluster
};

struct Segment {
  uint64_t guest = 0;
  uint64_t length = 0;
  Kind kind = Kind::Unallocated;
  uint32_t layer = 0;  // index in the backing chain (0: the image named)
  uint64_t host = 0;
  uint32_t csize = 0;
  uint32_t inner = 0;
};

// One persistent dirty bitmap of the bitmap directory.
struct Bitmap {
  std::string name;
  uint64_t table_offset = 0;
  uint32_t table_size = 0;  // entries
  uint32_t flags = 0;
  uint8_t type = 0;
  uint8_t granularity_bits = 0;
  bool in_use() const { return (flags & 1) != 0; }
  bool auto_enabled() const { return (flags & 2) != 0; }
  uint64_t directory_offset = 0;  // where its entry is, for messages
};

class Image {
 public:
  // Parses the header and reads the L1 table. `file` must outlive the Image.
  Image(fat::ByteReader& file, std::string name);

  const Header& header() const { return h_; }
  const std::string& name() const { return name_; }
  uint64_t file_size() const { return file_size_; }

  // Appends the segments of guest range [offset, offset + length) (inside
  // the virtual size) to `out`, merging neighbours of the same kind (data
  // only when the host ranges are contiguous); `layer` is copied into them.
  void map(uint64_t offset, uint64_t length, uint32_t layer, std::vector<Segment>& out);

  // Decompresses the cluster a Compressed segment belongs to into `dst`
  // (cluster_size bytes).
  void read_compressed(uint64_t host, uint32_t csize, uint8_t* dst);

  // Bytes of guest data this image holds itself (data and compressed clusters).
  uint64_t allocated_bytes();

  // The bitmap directory (empty without a valid bitmaps extension).
  std::vector<Bitmap> bitmaps();

  // The guest ranges a bitmap marks dirty, merged, inside the virtual size.
  // Throws BITMAP_IN_USE for a bitmap flagged in use (its content is not
  // valid) and QCOW2_CORRUPT for a damaged one.
  std::vector<std::pair<uint64_t, uint64_t>> bitmap_extents(const Bitmap& b);

 private:
  const std::vector<uint64_t>& l2_table(uint64_t l1_index);
  void check_host_cluster(uint64_t off, const char* what, uint64_t where) const;

  fat::ByteReader& file_;
  std::string name_;
  uint64_t file_size_;
  Header h_;
  std::vector<uint64_t> l1_;
  // A few L2 tables (64-bit words as stored, decoded from big-endian).
  std::map<uint64_t, std::vector<uint64_t>> l2_cache_;
  std::vector<uint8_t> scratch_;
};

// Decompresses `src` (deflate without zlib header, or zstd) until `dst` is
// full; trailing input (padding to a sector) is ignored. Throws
// QCOW2_CORRUPT when the data does not decompress to exactly `dst_len` bytes.
void decompress_cluster(CompressionType type, const uint8_t* src, size_t src_len, uint8_t* dst, size_t dst_len,
                        const std::string& where);

}  // namespace lowtide::qcow2
