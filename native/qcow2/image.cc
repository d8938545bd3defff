#include "qcow2/image.h"

#include <zlib.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include "copy/zstd.h"

namespace lowtide::qcow2 {
namespace {

constexpr uint32_t kMagic = 0x514649fb;  // "QFI\xfb"
constexpr uint32_t kExtEnd = 0;
constexpr uint32_t kExtBackingFormat = 0xe2792aca;
constexpr uint32_t kExtBitmaps = 0x23852875;
constexpr uint32_t kExtDataFile = 0x44415441;

constexpr uint64_t kIncompatDirty = 1u << 0;
constexpr uint64_t kIncompatCorrupt = 1u << 1;
constexpr uint64_t kIncompatDataFile = 1u << 2;
constexpr uint64_t kIncompatCompression = 1u << 3;
constexpr uint64_t kIncompatExtendedL2 = 1u << 4;
constexpr uint64_t kKnownIncompat = kIncompatDirty | kIncompatCorrupt | kIncompatDataFile | kIncompatCompression | kIncompatExtendedL2;

constexpr uint64_t kOffsetMask = 0x00fffffffffffe00ull;  // bits 9..55 of L1 and standard L2 entries
constexpr uint64_t kCompressedFlag = uint64_t(1) << 62;
constexpr uint64_t kZeroFlag = 1;

uint32_t be32(const uint8_t* p) { return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | uint32_t(p[3]); }
uint64_t be64(const uint8_t* p) { return (uint64_t(be32(p)) << 32) | be32(p + 4); }

[[noreturn]] void corrupt(const std::string& name, uint64_t offset, const std::string& message) {
  throw io::IoError("QCOW2_CORRUPT", name + ": qcow2 " + message + " (byte offset " + std::to_string(offset) + ")", 0,
                    static_cast<int64_t>(offset));
}

[[noreturn]] void unsupported(const std::string& name, const std::string& message) {
  throw io::IoError("UNSUPPORTED", name + ": " + message);
}

// A big-endian field view over bytes read from the file, bounds-checked.
struct View {
  const std::vector<uint8_t>& b;
  const std::string& name;
  uint32_t u32(size_t off) const {
    if (off > b.size() || b.size() - off < 4) corrupt(name, off, "header field lies past the end of the header");
    return be32(b.data() + off);
  }
  uint64_t u64(size_t off) const {
    if (off > b.size() || b.size() - off < 8) corrupt(name, off, "header field lies past the end of the header");
    return be64(b.data() + off);
  }
};

bool cluster_aligned(uint64_t off, uint64_t cluster_size) { return (off & (cluster_size - 1)) == 0; }

}  // namespace

bool has_magic(const uint8_t* p, size_t n) { return n >= 4 && be32(p) == kMagic; }

Header parse_header(fat::ByteReader& file, const std::string& name) {
  const uint64_t file_size = file.size();
  if (file_size < 72) corrupt(name, 0, "header is truncated: the file has " + std::to_string(file_size) + " bytes, a header needs 72");
  std::vector<uint8_t> first(72);
  file.read(0, first.data(), first.size());
  View v{first, name};
  Header h;
  if (v.u32(0) != kMagic) corrupt(name, 0, "magic is missing: not a qcow2 image");
  h.version = v.u32(4);
  if (h.version != 2 && h.version != 3)
    unsupported(name, "qcow2 version " + std::to_string(h.version) + " is not supported (2 and 3 are)");
  h.cluster_bits = v.u32(20);
  if (h.cluster_bits < kMinClusterBits || h.cluster_bits > kMaxClusterBits)
    corrupt(name, 20, "cluster_bits " + std::to_string(h.cluster_bits) + " is outside 9..21");
  h.cluster_size = uint64_t(1) << h.cluster_bits;

  // The header cluster (or the whole file when it is shorter) holds the
  // header, its extensions and usually the backing file's name.
  const uint64_t head_len = std::min<uint64_t>(h.cluster_size, file_size);
  std::vector<uint8_t> head(head_len);
  file.read(0, head.data(), head.size());
  View hv{head, name};
  h.backing_offset = hv.u64(8);
  h.backing_size = hv.u32(16);
  h.virtual_size = hv.u64(24);
  h.crypt_method = hv.u32(32);
  h.l1_size = hv.u32(36);
  h.l1_offset = hv.u64(40);
  h.refcount_table_offset = hv.u64(48);
  h.refcount_table_clusters = hv.u32(56);
  h.nb_snapshots = hv.u32(60);
  h.snapshots_offset = hv.u64(64);
  if (h.version == 3) {
    if (head_len < 104) corrupt(name, 72, "version 3 header is truncated");
    h.incompatible = hv.u64(72);
    h.compatible = hv.u64(80);
    h.autoclear = hv.u64(88);
    h.refcount_order = hv.u32(96);
    h.header_length = hv.u32(100);
    if (h.header_length < 104 || h.header_length % 8 != 0 || h.header_length > head_len)
      corrupt(name, 100,
              "header_length " + std::to_string(h.header_length) + " is not a multiple of 8 from 104 to the header cluster");
    if (h.refcount_order > 6) corrupt(name, 96, "refcount_order " + std::to_string(h.refcount_order) + " is above 6");
    if (h.header_length > 104) h.compression = static_cast<CompressionType>(head[104]);
  }

  // Features.
  if (h.crypt_method != 0)
    unsupported(name, std::string("qcow2 encryption (") +
                          (h.crypt_method == 1   ? "AES"
                           : h.crypt_method == 2 ? "LUKS"
                                                 : "method " + std::to_string(h.crypt_method)) +
                          ") is not supported");
  if (h.incompatible & kIncompatCorrupt)
    unsupported(name, "the image is marked corrupt (incompatible feature 'corrupt'): run qemu-img check -r");
  if (h.incompatible & kIncompatDataFile)
    unsupported(name, "qcow2 external data files (incompatible feature 'external data file') are not supported");
  if (uint64_t unknown = h.incompatible & ~kKnownIncompat) {
    int bit = 0;
    while (!((unknown >> bit) & 1)) ++bit;
    unsupported(name, "unknown qcow2 incompatible feature bit " + std::to_string(bit));
  }
  h.dirty = (h.incompatible & kIncompatDirty) != 0;
  if (h.incompatible & kIncompatCompression) {
    if (h.header_length <= 104) corrupt(name, 104, "the compression type feature is set but the header has no compression_type field");
    if (head[104] > 1)
      unsupported(name, "qcow2 compression type " + std::to_string(head[104]) + " is not supported (0 deflate, 1 zstd)");
  } else if (h.compression != CompressionType::Deflate) {
    corrupt(name, 104, "compression_type is not deflate but the compression type feature bit is clear");
  }
  h.extended_l2 = (h.incompatible & kIncompatExtendedL2) != 0;
  if (h.extended_l2 && h.cluster_bits < 14) corrupt(name, 20, "extended L2 entries need clusters of at least 16 KiB");
  h.l2_entry_bytes = h.extended_l2 ? 16 : 8;
  h.l2_entries = h.cluster_size / h.l2_entry_bytes;
  h.subcluster_size = h.extended_l2 ? h.cluster_size / 32 : h.cluster_size;

  // Sizes and tables.
  if (h.virtual_size > kMaxVirtualSize)
    unsupported(name, "virtual size " + std::to_string(h.virtual_size) + " bytes is above the largest supported (2^52 bytes)");
  const uint64_t per_l2 = h.cluster_size * h.l2_entries;  // <= 2^39
  const uint64_t l1_needed = (h.virtual_size + per_l2 - 1) / per_l2;
  if (h.l1_size > kMaxL1Entries) corrupt(name, 36, "l1_size " + std::to_string(h.l1_size) + " is above the largest L1 table");
  if (h.l1_size < l1_needed)
    corrupt(name, 36,
            "l1_size " + std::to_string(h.l1_size) + " is too small for the virtual size (" + std::to_string(l1_needed) + " needed)");
  if (h.l1_size > 0) {
    if (!cluster_aligned(h.l1_offset, h.cluster_size)) corrupt(name, 40, "L1 table offset is not cluster-aligned");
    if (h.l1_offset < h.cluster_size) corrupt(name, 40, "L1 table overlaps the header");
    const uint64_t l1_bytes = uint64_t(h.l1_size) * 8;
    if (h.l1_offset > file_size || l1_bytes > file_size - h.l1_offset) corrupt(name, 40, "L1 table lies past the end of the file");
  }
  if (!cluster_aligned(h.refcount_table_offset, h.cluster_size) || h.refcount_table_offset < h.cluster_size)
    corrupt(name, 48, "refcount table offset is not a cluster-aligned offset past the header");
  const uint64_t refcount_bytes = uint64_t(h.refcount_table_clusters) * h.cluster_size;  // <= 2^53
  if (h.refcount_table_clusters == 0 || h.refcount_table_offset > file_size || refcount_bytes > file_size - h.refcount_table_offset)
    corrupt(name, 56, "refcount table lies past the end of the file");
  if (h.nb_snapshots > 65536) corrupt(name, 60, "snapshot count " + std::to_string(h.nb_snapshots) + " is above 65536");

  // Header extensions.
  uint64_t ext = h.version == 3 ? h.header_length : 72;
  bool data_file_ext = false;
  for (int n = 0;; ++n) {
    if (ext + 8 > head_len) {
      if (ext == head_len && n == 0 && h.version == 2) break;  // a v2 header with nothing after it
      corrupt(name, ext, "header extensions run past the header cluster");
    }
    const uint32_t type = be32(head.data() + ext);
    const uint32_t len = be32(head.data() + ext + 4);
    if (type == kExtEnd) break;
    if (len > head_len - ext - 8)
      corrupt(name, ext, "header extension of " + std::to_string(len) + " bytes runs past the header cluster");
    const uint8_t* data = head.data() + ext + 8;
    if (type == kExtBackingFormat) {
      h.backing_format.assign(reinterpret_cast<const char*>(data), len);
      h.backing_format = h.backing_format.substr(0, h.backing_format.find('\0'));
    } else if (type == kExtBitmaps) {
      h.bitmaps_extension = true;
      if (len < 24) corrupt(name, ext, "bitmaps extension is shorter than 24 bytes");
      h.nb_bitmaps = be32(data);
      h.bitmap_directory_size = be64(data + 8);
      h.bitmap_directory_offset = be64(data + 16);
    } else if (type == kExtDataFile) {
      data_file_ext = true;
    }
    ext += 8 + ((uint64_t(len) + 7) & ~uint64_t(7));
  }
  (void)data_file_ext;
  if (h.bitmaps_extension && (h.autoclear & 1)) {
    if (h.nb_bitmaps > 65535)
      corrupt(name, 0, "bitmaps extension names " + std::to_string(h.nb_bitmaps) + " bitmaps, more than 65535");
    if (h.bitmap_directory_size > (uint64_t(64) << 20)) corrupt(name, 0, "bitmap directory is larger than 64 MiB");
    if (!cluster_aligned(h.bitmap_directory_offset, h.cluster_size) || h.bitmap_directory_offset < h.cluster_size ||
        h.bitmap_directory_offset > file_size || h.bitmap_directory_size > file_size - h.bitmap_directory_offset)
      corrupt(name, 0, "bitmap directory lies outside the file or overlaps the header");
  }

  if (h.backing_offset != 0) {
    if (h.backing_size == 0 || h.backing_size > kMaxBackingNameBytes)
      corrupt(name, 16, "backing file name length " + std::to_string(h.backing_size) + " is outside 1..1023");
    if (h.backing_offset > file_size || h.backing_size > file_size - h.backing_offset)
      corrupt(name, 8, "backing file name lies past the end of the file");
    std::string b(h.backing_size, '\0');
    file.read(h.backing_offset, reinterpret_cast<uint8_t*>(b.data()), b.size());
    if (b.find('\0') != std::string::npos) corrupt(name, h.backing_offset, "backing file name contains a NUL byte");
    h.backing_file = std::move(b);
  }
  return h;
}

Image::Image(fat::ByteReader& file, std::string name)
    : file_(file), name_(std::move(name)), file_size_(file.size()), h_(parse_header(file, name_)) {
  std::vector<uint8_t> raw(size_t(h_.l1_size) * 8);
  if (!raw.empty()) file_.read(h_.l1_offset, raw.data(), raw.size());
  l1_.resize(h_.l1_size);
  for (size_t i = 0; i < l1_.size(); ++i) l1_[i] = be64(raw.data() + i * 8);
}

void Image::check_host_cluster(uint64_t off, const char* what, uint64_t where) const {
  if (!cluster_aligned(off, h_.cluster_size))
    corrupt(name_, where, std::string(what) + " offset " + std::to_string(off) + " is not cluster-aligned");
  if (off < h_.cluster_size) corrupt(name_, where, std::string(what) + " at offset " + std::to_string(off) + " overlaps the header");
  if (off >= file_size_)
    corrupt(name_, where, std::string(what) + " at offset " + std::to_string(off) + " lies past the end of the file");
}

const std::vector<uint64_t>& Image::l2_table(uint64_t l1_index) {
  const uint64_t entry = l1_[l1_index];
  const uint64_t off = entry & kOffsetMask;
  const uint64_t where = h_.l1_offset + l1_index * 8;
  check_host_cluster(off, "L2 table", where);
  if (h_.cluster_size > file_size_ - off)
    corrupt(name_, where, "L2 table at offset " + std::to_string(off) + " lies past the end of the file");
  auto it = l2_cache_.find(off);
  if (it != l2_cache_.end()) return it->second;
  if (l2_cache_.size() >= 32) l2_cache_.clear();
  scratch_.resize(h_.cluster_size);
  file_.read(off, scratch_.data(), scratch_.size());
  std::vector<uint64_t> t(h_.cluster_size / 8);
  for (size_t i = 0; i < t.size(); ++i) t[i] = be64(scratch_.data() + i * 8);
  return l2_cache_.emplace(off, std::move(t)).first->second;
}

namespace {

void push(std::vector<Segment>& out, const Segment& s) {
  if (s.length == 0) return;
  if (!out.empty()) {
    Segment& last = out.back();
    if (last.kind == s.kind && last.layer == s.layer && last.guest + last.length == s.guest) {
      if (s.kind == Kind::Zero || s.kind == Kind::Unallocated) {
        last.length += s.length;
        return;
      }
      if (s.kind == Kind::Data && last.host + last.length == s.host) {
        last.length += s.length;
        return;
      }
    }
  }
  out.push_back(s);
}

}  // namespace

void Image::map(uint64_t offset, uint64_t length, uint32_t layer, std::vector<Segment>& out) {
  if (offset > h_.virtual_size || length > h_.virtual_size - offset) throw std::out_of_range("qcow2 map past the virtual size");
  const uint64_t cs = h_.cluster_size;
  const uint64_t end = offset + length;
  uint64_t pos = offset;
  while (pos < end) {
    const uint64_t cluster = pos >> h_.cluster_bits;
    const uint64_t l1_index = cluster / h_.l2_entries;
    const uint64_t l2_index = cluster % h_.l2_entries;
    const uint64_t cstart = cluster << h_.cluster_bits;
    const uint64_t cend = std::min(end, cstart + cs);
    Segment s;
    s.layer = layer;
    if (l1_index >= l1_.size() || (l1_[l1_index] & kOffsetMask) == 0) {
      // No L2 table: the whole L2 range is unallocated.
      const uint64_t span_end = std::min(end, (l1_index + 1) * h_.l2_entries * cs);
      push(out, {pos, span_end - pos, Kind::Unallocated, layer, 0, 0, 0});
      pos = span_end;
      continue;
    }
    const std::vector<uint64_t>& t = l2_table(l1_index);
    const uint64_t where = (l1_[l1_index] & kOffsetMask) + l2_index * h_.l2_entry_bytes;
    const uint64_t e = t[l2_index * (h_.l2_entry_bytes / 8)];
    if (e & kCompressedFlag) {
      const uint32_t x = 62 - (h_.cluster_bits - 8);
      const uint64_t host = e & ((uint64_t(1) << x) - 1);
      const uint64_t sectors = ((e >> x) & ((uint64_t(1) << (h_.cluster_bits - 8)) - 1)) + 1;
      const uint64_t csize = sectors * 512 - (host & 511);
      if (host < cs) corrupt(name_, where, "compressed cluster at offset " + std::to_string(host) + " overlaps the header");
      if (host >= file_size_)
        corrupt(name_, where, "compressed cluster at offset " + std::to_string(host) + " lies past the end of the file");
      push(out,
           {pos, cend - pos, Kind::Compressed, layer, host, uint32_t(std::min(csize, file_size_ - host)), uint32_t(pos - cstart)});
      pos = cend;
      continue;
    }
    const uint64_t host = e & kOffsetMask;
    auto data = [&](uint64_t from, uint64_t to, uint64_t host_from) {
      // A cluster's tail past the end of the file reads as zeros.
      const uint64_t in_file = host_from < file_size_ ? std::min(to - from, file_size_ - host_from) : 0;
      push(out, {from, in_file, Kind::Data, layer, host_from, 0, 0});
      push(out, {from + in_file, to - from - in_file, Kind::Zero, layer, 0, 0, 0});
    };
    if (!h_.extended_l2) {
      if (h_.version == 3 && (e & kZeroFlag)) {
        push(out, {pos, cend - pos, Kind::Zero, layer, 0, 0, 0});
      } else if (host != 0) {
        check_host_cluster(host, "data cluster", where);
        data(pos, cend, host + (pos - cstart));
      } else {
        push(out, {pos, cend - pos, Kind::Unallocated, layer, 0, 0, 0});
      }
      pos = cend;
      continue;
    }
    const uint64_t bitmap = t[l2_index * 2 + 1];
    const uint32_t alloc = uint32_t(bitmap);
    const uint32_t zero = uint32_t(bitmap >> 32);
    if (alloc & zero) corrupt(name_, where + 8, "subcluster bitmap marks a subcluster both allocated and zero");
    if (host == 0 && alloc != 0) corrupt(name_, where, "subclusters are marked allocated in a cluster without a host offset");
    if (host != 0) check_host_cluster(host, "data cluster", where);
    const uint64_t sc = h_.subcluster_size;
    while (pos < cend) {
      const uint32_t i = uint32_t((pos - cstart) / sc);
      const uint64_t send = std::min(cend, cstart + (uint64_t(i) + 1) * sc);
      if (alloc & (1u << i)) data(pos, send, host + (pos - cstart));
      else if (zero & (1u << i)) push(out, {pos, send - pos, Kind::Zero, layer, 0, 0, 0});
      else push(out, {pos, send - pos, Kind::Unallocated, layer, 0, 0, 0});
      pos = send;
    }
  }
}

uint64_t Image::allocated_bytes() {
  uint64_t total = 0;
  std::vector<Segment> segs;
  const uint64_t step = h_.cluster_size * h_.l2_entries;
  for (uint64_t off = 0; off < h_.virtual_size; off += step) {
    segs.clear();
    map(off, std::min(step, h_.virtual_size - off), 0, segs);
    for (const Segment& s : segs)
      if (s.kind == Kind::Data || s.kind == Kind::Compressed) total += s.length;
  }
  return total;
}

std::vector<Bitmap> Image::bitmaps() {
  std::vector<Bitmap> out;
  // Without autoclear bit 0 a program that knew nothing of bitmaps wrote the image: they are stale.
  if (!h_.bitmaps_extension || !(h_.autoclear & 1) || h_.nb_bitmaps == 0) return out;
  std::vector<uint8_t> d(h_.bitmap_directory_size);
  file_.read(h_.bitmap_directory_offset, d.data(), d.size());
  size_t pos = 0;
  for (uint32_t i = 0; i < h_.nb_bitmaps; ++i) {
    const uint64_t where = h_.bitmap_directory_offset + pos;
    if (d.size() - pos < 24) corrupt(name_, where, "bitmap directory entry " + std::to_string(i) + " runs past the directory");
    Bitmap b;
    b.directory_offset = where;
    b.table_offset = be64(&d[pos]);
    b.table_size = be32(&d[pos + 8]);
    b.flags = be32(&d[pos + 12]);
    b.type = d[pos + 16];
    b.granularity_bits = d[pos + 17];
    const uint32_t name_size = (uint32_t(d[pos + 18]) << 8) | d[pos + 19];
    const uint32_t extra = be32(&d[pos + 20]);
    const uint64_t entry = (24 + uint64_t(extra) + name_size + 7) & ~uint64_t(7);
    if (name_size == 0 || entry > d.size() - pos)
      corrupt(name_, where, "bitmap directory entry " + std::to_string(i) + " runs past the directory");
    b.name.assign(reinterpret_cast<const char*>(&d[pos + 24 + extra]), name_size);
    out.push_back(std::move(b));
    pos += entry;
  }
  return out;
}

std::vector<std::pair<uint64_t, uint64_t>> Image::bitmap_extents(const Bitmap& b) {
  const std::string what = "bitmap '" + b.name + "'";
  if (b.in_use())
    throw io::IoError(
        "BITMAP_IN_USE",
        name_ + ": " + what +
            " is flagged in use: the image was not closed cleanly or is open in a running QEMU, so the bitmap is not valid");
  if (b.type != 1) unsupported(name_, what + " has type " + std::to_string(b.type) + " (only dirty-tracking bitmaps are read)");
  if (b.granularity_bits < 9 || b.granularity_bits > 31)
    corrupt(name_, b.directory_offset, what + " has granularity_bits " + std::to_string(b.granularity_bits) + ", outside 9..31");
  const uint64_t gran = uint64_t(1) << b.granularity_bits;
  const uint64_t bits = (h_.virtual_size + gran - 1) / gran;
  const uint64_t bits_per_cluster = h_.cluster_size * 8;
  const uint64_t needed = (bits + bits_per_cluster - 1) / bits_per_cluster;
  if (b.table_size < needed)
    corrupt(name_, b.directory_offset,
            what + " has a table of " + std::to_string(b.table_size) + " entries, " + std::to_string(needed) + " needed");
  if (!cluster_aligned(b.table_offset, h_.cluster_size) || b.table_offset < h_.cluster_size || b.table_offset > file_size_ ||
      uint64_t(b.table_size) * 8 > file_size_ - b.table_offset)
    corrupt(name_, b.directory_offset, what + " has its table outside the file or in the header");
  std::vector<uint8_t> table(size_t(needed) * 8);
  if (!table.empty()) file_.read(b.table_offset, table.data(), table.size());
  std::vector<std::pair<uint64_t, uint64_t>> out;
  auto mark = [&](uint64_t first_bit, uint64_t nbits) {
    const uint64_t from = first_bit * gran;
    const uint64_t to = std::min(h_.virtual_size, (first_bit + nbits) * gran);
    if (to <= from) return;
    if (!out.empty() && out.back().first + out.back().second == from) out.back().second += to - from;
    else out.emplace_back(from, to - from);
  };
  std::vector<uint8_t> cluster(h_.cluster_size);
  for (uint64_t i = 0; i < needed; ++i) {
    const uint64_t e = be64(&table[i * 8]);
    const uint64_t off = e & kOffsetMask;
    const uint64_t first = i * bits_per_cluster;
    const uint64_t n = std::min(bits_per_cluster, bits - first);
    if (off == 0) {
      if (e & 1) mark(first, n);  // all ones
      continue;
    }
    check_host_cluster(off, "bitmap data cluster", b.table_offset + i * 8);
    if (h_.cluster_size > file_size_ - off)
      corrupt(name_, b.table_offset + i * 8, "bitmap data cluster lies past the end of the file");
    file_.read(off, cluster.data(), cluster.size());
    uint64_t run_start = 0, run_len = 0;
    for (uint64_t bit = 0; bit < n; ++bit) {
      if ((bit & 7) == 0 && cluster[bit >> 3] == 0 && bit + 8 <= n) {
        bit += 7;
        if (run_len) {
          mark(first + run_start, run_len);
          run_len = 0;
        }
        continue;
      }
      if ((cluster[bit >> 3] >> (bit & 7)) & 1) {
        if (run_len == 0) run_start = bit;
        ++run_len;
      } else if (run_len) {
        mark(first + run_start, run_len);
        run_len = 0;
      }
    }
    if (run_len) mark(first + run_start, run_len);
  }
  return out;
}

void Image::read_compressed(uint64_t host, uint32_t csize, uint8_t* dst) {
  std::vector<uint8_t> src(csize);
  file_.read(host, src.data(), src.size());
  decompress_cluster(h_.compression, src.data(), src.size(), dst, h_.cluster_size,
                     name_ + " compressed cluster at offset " + std::to_string(host));
}

void decompress_cluster(CompressionType type, const uint8_t* src, size_t src_len, uint8_t* dst, size_t dst_len,
                        const std::string& where) {
  if (type == CompressionType::Deflate) {
    z_stream z{};
    if (inflateInit2(&z, -12) != Z_OK) throw io::IoError("INTERNAL", "inflateInit2 failed");
    z.next_in = const_cast<Bytef*>(src);
    z.avail_in = uInt(src_len);
    z.next_out = dst;
    z.avail_out = uInt(dst_len);
    const int rc = inflate(&z, Z_FINISH);
    const bool full = z.avail_out == 0;
    inflateEnd(&z);
    if (!((rc == Z_STREAM_END || rc == Z_BUF_ERROR) && full))
      throw io::IoError("QCOW2_CORRUPT", where + ": deflate data does not decompress to one cluster");
    return;
  }
  try {
    copy::zstd_decompress_exact(src, src_len, dst, dst_len);
  } catch (const io::IoError&) {
    throw;
  } catch (const std::exception& e) {
    throw io::IoError("QCOW2_CORRUPT", where + ": " + e.what());
  }
}

}  // namespace lowtide::qcow2
