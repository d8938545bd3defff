#include "fat/dir.h"

namespace lowtide::fat {
namespace {

// Positions of the 13 UTF-16 units inside an LFN slot.
constexpr uint8_t kLfnUnitOffsets[13] = {1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30};

std::string format_short(const uint8_t* raw, bool lower_base, bool lower_ext, bool apply_case) {
  uint8_t name[11];
  for (int i = 0; i < 11; i++) name[i] = raw[i];
  if (name[0] == 0x05) name[0] = 0xE5;  // 0x05 stands for a leading 0xE5 byte
  int base_len = 8, ext_len = 3;
  while (base_len > 0 && name[base_len - 1] == ' ') base_len--;
  while (ext_len > 0 && name[8 + ext_len - 1] == ' ') ext_len--;
  if (apply_case) {
    for (int i = 0; i < base_len; i++)
      if (lower_base && name[i] >= 'A' && name[i] <= 'Z') name[i] = static_cast<uint8_t>(name[i] + 32);
    for (int i = 0; i < ext_len; i++)
      if (lower_ext && name[8 + i] >= 'A' && name[8 + i] <= 'Z') name[8 + i] = static_cast<uint8_t>(name[8 + i] + 32);
  }
  std::string s = oem_to_utf8(name, static_cast<size_t>(base_len));
  if (ext_len > 0) s += "." + oem_to_utf8(name + 8, static_cast<size_t>(ext_len));
  return s;
}

}  // namespace

std::string unsafe_name_reason(const std::string& name) {
  if (name.empty()) return "it is empty";
  if (name == "." || name == "..") return "it is \"" + name + "\"";
  for (unsigned char c : name) {
    if (c == '/') return "it holds '/'";
    if (c == 0) return "it holds a NUL byte";
    if (c < 0x20 || c == 0x7F) return "it holds a control character";
  }
  return "";
}

std::string escape_name(const std::string& name) {
  static const char kHex[] = "0123456789ABCDEF";
  if (name.empty()) return "%";
  if (name == ".") return "%2E";
  if (name == "..") return "%2E%2E";
  std::string out;
  out.reserve(name.size());
  for (unsigned char c : name) {
    if (c == '/' || c < 0x20 || c == 0x7F) {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

uint8_t lfn_checksum(const uint8_t* name11) {
  uint8_t sum = 0;
  for (int i = 0; i < 11; i++) sum = static_cast<uint8_t>(((sum & 1) << 7) + (sum >> 1) + name11[i]);
  return sum;
}

void DirParser::drop_pending() {
  if (pending_) orphan_lfn++;
  pending_ = false;
}

bool DirParser::feed(const uint8_t* s, uint64_t offset) {
  if (ended_) return false;
  slots++;
  const uint8_t first = s[0];
  if (first == 0x00) {
    drop_pending();
    ended_ = true;
    return false;
  }
  const uint8_t attr = s[11];
  if (first == 0xE5) {  // deleted slot (8.3 or LFN)
    drop_pending();
    if ((attr & 0x3F) != kAttrLongName) deleted++;
    return true;
  }
  if ((attr & 0x3F) == kAttrLongName) {
    const uint8_t seq = first & 0x1F;
    if (first & 0x40) {  // the last (highest) part comes first on disk
      drop_pending();
      if (seq == 0 || seq > 20 || (first & 0xA0) != 0) {
        orphan_lfn++;
        return true;
      }
      pending_ = true;
      lfn_total_ = lfn_expect_ = seq;
      lfn_seen_ = 0;
      lfn_sum_ = s[13];
      lfn_first_offset_ = offset;
    } else if (!pending_ || seq != lfn_expect_ || s[13] != lfn_sum_ || (first & 0xE0) != 0) {
      drop_pending();
      orphan_lfn++;
      return true;
    }
    for (int i = 0; i < 13; i++)
      lfn_units_[(seq - 1) * 13 + i] = static_cast<uint16_t>(s[kLfnUnitOffsets[i]] | (s[kLfnUnitOffsets[i] + 1] << 8));
    lfn_expect_--;
    lfn_seen_++;
    return true;
  }
  if (attr & kAttrVolumeId) {  // volume label (or junk with the label bit)
    drop_pending();
    if (is_root_ && !label && (attr & kAttrDirectory) == 0) {
      // A label is 11 bytes with no dot.
      uint8_t raw[11];
      for (int i = 0; i < 11; i++) raw[i] = s[i];
      if (raw[0] == 0x05) raw[0] = 0xE5;
      int len = 11;
      while (len > 0 && raw[len - 1] == ' ') len--;
      label = oem_to_utf8(raw, static_cast<size_t>(len));
    }
    return true;
  }
  // "." and "..": skipped.
  if (first == '.' && (s[1] == ' ' || (s[1] == '.' && s[2] == ' '))) {
    drop_pending();
    return true;
  }

  DirEntry e;
  e.attr = attr;
  e.short_name = format_short(s, false, false, false);
  e.offset = offset;
  e.lfn_offset = offset;
  uint32_t lo = static_cast<uint32_t>(s[26] | (s[27] << 8));
  uint32_t hi = static_cast<uint32_t>(s[20] | (s[21] << 8));
  e.first_cluster = fat32_ ? (hi << 16) | lo : lo;
  e.size = load_le32(s + 28);
  e.create_tenths = s[13];
  e.create_time = load_le16(s + 14);
  e.create_date = load_le16(s + 16);
  e.access_date = load_le16(s + 18);
  e.modify_time = load_le16(s + 22);
  e.modify_date = load_le16(s + 24);

  bool long_ok = false;
  if (pending_ && lfn_expect_ == 0 && lfn_checksum(s) == lfn_sum_) {
    size_t n = 0, max = static_cast<size_t>(lfn_total_) * 13;
    while (n < max && lfn_units_[n] != 0) n++;
    if (n > 0 && n <= 255) {
      std::string name = utf16_to_utf8(lfn_units_, n);
      std::string why = unsafe_name_reason(name);
      if (why.empty()) {
        e.name = std::move(name);
        long_ok = true;
      } else {
        // The long name is not used; the 8.3 name stands for the entry.
        e.unsafe = "long name " + escape_name(name) + " refused: " + why;
      }
      e.lfn_offset = lfn_first_offset_;
      e.lfn_slots = lfn_seen_;
    }
  }
  if (pending_ && !long_ok && e.unsafe.empty()) orphan_lfn++;
  pending_ = false;
  // The short name as stored, escaped when it cannot be a path component.
  std::string why_short = unsafe_name_reason(e.short_name);
  if (!why_short.empty()) {
    std::string escaped = escape_name(e.short_name);
    if (!long_ok) e.unsafe += (e.unsafe.empty() ? "" : "; ") + ("8.3 name escaped as " + escaped + ": " + why_short);
    e.short_name = std::move(escaped);
  }
  if (!long_ok) {
    std::string shown = format_short(s, (s[12] & 0x08) != 0, (s[12] & 0x10) != 0, true);
    e.name = unsafe_name_reason(shown).empty() ? shown : escape_name(shown);
  }
  entries.push_back(std::move(e));
  return true;
}

}  // namespace lowtide::fat
