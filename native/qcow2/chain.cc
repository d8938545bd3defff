#include "qcow2/chain.h"

#include <algorithm>
#include <cstring>

namespace lowtide::qcow2 {

void Chain::add_qcow2(std::unique_ptr<fat::ByteReader> file, const std::string& path) {
  Layer l;
  l.path = path;
  l.format = "qcow2";
  l.image = std::make_unique<Image>(*file, path);
  l.size = l.image->header().virtual_size;
  l.file = std::move(file);
  layers_.push_back(std::move(l));
}

void Chain::add_raw(std::unique_ptr<fat::ByteReader> file, const std::string& path) {
  Layer l;
  l.path = path;
  l.format = "raw";
  l.size = file->size();
  l.file = std::move(file);
  layers_.push_back(std::move(l));
}

namespace {

void push(std::vector<Segment>& out, Segment s) {
  if (s.length == 0) return;
  if (s.kind == Kind::Unallocated || s.kind == Kind::Zero) s.layer = 0;
  if (!out.empty()) {
    Segment& last = out.back();
    if (last.kind == s.kind && last.guest + last.length == s.guest) {
      if (s.kind == Kind::Unallocated || s.kind == Kind::Zero ||
          (s.kind == Kind::Data && last.layer == s.layer && last.host + last.length == s.host)) {
        last.length += s.length;
        return;
      }
    }
  }
  out.push_back(s);
}

}  // namespace

void Chain::resolve(uint32_t layer, uint64_t offset, uint64_t length, std::vector<Segment>& out) {
  if (layer >= layers_.size()) {
    push(out, {offset, length, Kind::Unallocated, 0, 0, 0, 0});
    return;
  }
  Layer& l = layers_[layer];
  const uint64_t inside = offset >= l.size ? 0 : std::min(length, l.size - offset);
  if (inside > 0) {
    if (!l.image) {
      push(out, {offset, inside, Kind::Data, layer, offset, 0, 0});
    } else {
      std::vector<Segment> mine;
      l.image->map(offset, inside, layer, mine);
      for (const Segment& s : mine) {
        if (s.kind == Kind::Unallocated) resolve(layer + 1, s.guest, s.length, out);
        else push(out, s);
      }
    }
  }
  // Past the end of a backing file the guest reads zeros.
  push(out, {offset + inside, length - inside, Kind::Unallocated, 0, 0, 0, 0});
}

std::vector<Segment> Chain::map(uint64_t offset, uint64_t length) {
  std::lock_guard lock(mu_);
  std::vector<Segment> out;
  if (offset > size() || length > size() - offset)
    throw io::IoError("OUT_OF_RANGE", "guest range [" + std::to_string(offset) + ", +" + std::to_string(length) +
                                          ") passes the end of the virtual disk");
  resolve(0, offset, length, out);
  return out;
}

void Chain::read_compressed_locked(const Segment& s, uint8_t* dst) {
  Layer& l = layers_.at(s.layer);
  const uint64_t cs = l.image->header().cluster_size;
  if (cached_layer_ != s.layer || cached_host_ != s.host || cached_.size() != cs) {
    cached_.resize(cs);
    cached_layer_ = UINT32_MAX;
    l.image->read_compressed(s.host, s.csize, cached_.data());
    cached_layer_ = s.layer;
    cached_host_ = s.host;
  }
  if (s.inner > cs || s.length > cs - s.inner) throw io::IoError("INTERNAL", "compressed segment outside its cluster");
  std::memcpy(dst, cached_.data() + s.inner, s.length);
}

void Chain::read_compressed(const Segment& s, uint8_t* dst) {
  std::lock_guard lock(mu_);
  read_compressed_locked(s, dst);
}

std::vector<Bitmap> Chain::bitmaps() {
  std::lock_guard lock(mu_);
  if (layers_.empty() || !layers_[0].image) return {};
  return layers_[0].image->bitmaps();
}

std::vector<std::pair<uint64_t, uint64_t>> Chain::bitmap_extents(const std::string& name) {
  std::lock_guard lock(mu_);
  if (layers_.empty() || !layers_[0].image) throw io::IoError("UNSUPPORTED", "dirty bitmaps are read from qcow2 images only");
  std::string names;
  for (const Bitmap& b : layers_[0].image->bitmaps()) {
    if (b.name == name) return layers_[0].image->bitmap_extents(b);
    names += (names.empty() ? "" : ", ") + b.name;
  }
  throw io::IoError("NOT_FOUND", layers_[0].path + ": no bitmap named '" + name + "' (" +
                                     (names.empty() ? "the image has no bitmaps" : "bitmaps: " + names) + ")");
}

void Chain::read(uint64_t offset, uint8_t* dst, size_t len) {
  std::lock_guard lock(mu_);
  if (offset > size() || len > size() - offset)
    throw io::IoError("SHORT_READ",
                      "read of " + std::to_string(len) + " bytes at offset " + std::to_string(offset) +
                          " passes the end of the virtual disk (" + std::to_string(size()) + " bytes)",
                      0, static_cast<int64_t>(offset));
  std::vector<Segment> segs;
  resolve(0, offset, len, segs);
  for (const Segment& s : segs) {
    uint8_t* p = dst + (s.guest - offset);
    switch (s.kind) {
      case Kind::Data: layers_[s.layer].file->read(s.host, p, s.length); break;
      case Kind::Compressed: read_compressed_locked(s, p); break;
      default: std::memset(p, 0, s.length);
    }
  }
}

}  // namespace lowtide::qcow2
