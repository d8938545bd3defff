// libFuzzer harness of the qcow2 parser (native/qcow2): header, L1/L2 tables
// (standard and extended), compressed clusters, over an in-memory file.
//
// Options (fuzz_input.h header, bytes 4..7): bits 0..7 choose where the map
// starts (in MiB of guest). Invariants: the segments tile the mapped range in
// order; data lies inside the file; a compressed segment lies inside its
// cluster; reading the guest through the chain gives zeros where the map says
// zero or unallocated; a dirty bitmap's ranges are sorted, disjoint and inside
// the virtual size.
#include <algorithm>
#include <memory>
#include <stdexcept>
#include <vector>

#include "fuzz_input.h"
#include "qcow2/chain.h"

using namespace lowtide;

namespace {

constexpr uint64_t kMapBytes = uint64_t(16) << 20;
constexpr uint64_t kReadBytes = uint64_t(256) << 10;

class BorrowedReader final : public fat::ByteReader {
 public:
  explicit BorrowedReader(fat::ByteReader& r) : r_(r) {}
  uint64_t size() const override { return r_.size(); }
  void read(uint64_t offset, uint8_t* dst, size_t len) override { r_.read(offset, dst, len); }

 private:
  fat::ByteReader& r_;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::Input in;
  if (!fuzz::parse_input(data, size, &in)) return 0;
  fuzz::ZeroTailReader file(in.image, in.disk_size);
  qcow2::Chain chain;
  try {
    chain.add_qcow2(std::make_unique<BorrowedReader>(file), "fuzz.qcow2");
  } catch (const io::IoError&) {
    return 0;
  }
  const qcow2::Image& img = *chain.layers()[0].image;
  const uint64_t vsize = chain.size();
  const uint64_t start = std::min<uint64_t>(vsize, uint64_t(in.options & 0xff) << 20);
  const uint64_t len = std::min<uint64_t>(vsize - start, kMapBytes);
  std::vector<qcow2::Segment> segs;
  try {
    segs = chain.map(start, len);
  } catch (const io::IoError&) {
    return 0;
  }
  uint64_t pos = start;
  for (const qcow2::Segment& s : segs) {
    FUZZ_CHECK(s.guest == pos, "segments must tile the range");
    FUZZ_CHECK(s.length > 0, "empty segment");
    pos += s.length;
    if (s.kind == qcow2::Kind::Data) {
      FUZZ_CHECK(s.host >= img.header().cluster_size, "data overlaps the header");
      FUZZ_CHECK(s.host < file.size() && s.length <= file.size() - s.host, "data past the end of the file");
    }
    if (s.kind == qcow2::Kind::Compressed) {
      FUZZ_CHECK(s.inner + s.length <= img.header().cluster_size, "compressed segment outside its cluster");
      FUZZ_CHECK(s.host + s.csize <= file.size(), "compressed data past the end of the file");
    }
  }
  FUZZ_CHECK(pos == start + len, "segments must cover the range");

  try {
    for (const qcow2::Bitmap& b : chain.bitmaps()) {
      std::vector<std::pair<uint64_t, uint64_t>> ext;
      try {
        ext = chain.bitmap_extents(b.name);
      } catch (const io::IoError&) {
        continue;
      }
      uint64_t end = 0;
      for (const auto& [off, n] : ext) {
        FUZZ_CHECK(n > 0 && off >= end, "bitmap ranges must be sorted and disjoint");
        FUZZ_CHECK(off + n <= vsize, "bitmap range past the virtual size");
        end = off + n;
      }
    }
  } catch (const io::IoError&) {
  }

  const uint64_t rlen = std::min(len, kReadBytes);
  std::vector<uint8_t> buf(rlen);
  try {
    chain.read(start, buf.data(), buf.size());
  } catch (const io::IoError&) {
    return 0;
  }
  for (const qcow2::Segment& s : segs) {
    if (s.guest >= start + rlen) break;
    if (s.kind != qcow2::Kind::Zero && s.kind != qcow2::Kind::Unallocated) continue;
    const uint64_t from = s.guest - start, to = std::min(rlen, from + s.length);
    FUZZ_CHECK(std::all_of(buf.begin() + from, buf.begin() + to, [](uint8_t b) { return b == 0; }),
               "a zero or unallocated range read non-zero bytes");
  }
  return 0;
}
