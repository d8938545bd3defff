#include "fat/catalog.h"

#include <cstdio>
#include <ctime>

namespace lowtide::fat {

void append_json_string(std::string& out, const std::string& s) {
  static const char* const kHex = "0123456789abcdef";
  out.push_back('"');
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          out += "\\u00";
          out.push_back(kHex[c >> 4]);
          out.push_back(kHex[c & 15]);
        } else {
          out.push_back(static_cast<char>(c));
        }
    }
  }
  out.push_back('"');
}

std::string fat_time_iso(uint16_t date, uint16_t time) {
  int day = date & 0x1f, month = (date >> 5) & 0x0f, year = 1980 + (date >> 9);
  int seconds = (time & 0x1f) * 2, minutes = (time >> 5) & 0x3f, hours = time >> 11;
  if (day == 0 || month == 0 || month > 12 || hours > 23 || minutes > 59 || seconds > 59) {
    year = 1980, month = 1, day = 1, hours = 0, minutes = 0, seconds = 0;  // the FAT epoch
  }
  std::tm local{};
  local.tm_year = year - 1900;
  local.tm_mon = month - 1;
  local.tm_mday = day;  // mktime carries an overflowing day into the next month, as Date does
  local.tm_hour = hours;
  local.tm_min = minutes;
  local.tm_sec = seconds;
  local.tm_isdst = -1;
  std::time_t t = std::mktime(&local);
  std::tm utc{};
  gmtime_r(&t, &utc);
  char buf[64];  // room for any int the compiler imagines; the values are small
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.000Z", utc.tm_year + 1900, utc.tm_mon + 1, utc.tm_mday, utc.tm_hour,
                utc.tm_min, utc.tm_sec);
  return buf;
}

namespace {

bool excluded_path(const std::unordered_set<std::string>& excluded, const std::string& path) {
  if (excluded.empty()) return false;
  std::string at = path;
  while (!at.empty()) {
    if (excluded.count(at) != 0) return true;
    size_t slash = at.rfind('/');
    if (slash == std::string::npos) break;
    at.resize(slash);
  }
  return false;
}

}  // namespace

std::vector<CatalogFrame> catalog_frames(const std::vector<DirEntry>& entries, const std::vector<std::vector<Extent>>& extents,
                                         uint32_t partition, const std::unordered_set<std::string>& excluded, size_t frame_bytes) {
  std::vector<CatalogFrame> frames;
  CatalogFrame cur;
  const std::string head = "{\"partition\":" + std::to_string(partition) + ",\"path\":";
  for (size_t i = 0; i < entries.size(); i++) {
    const DirEntry& e = entries[i];
    const std::string path = e.path.empty() ? entry_path(entries, i) : e.path;
    if (excluded_path(excluded, path)) continue;
    std::string& out = cur.text;
    out += head;
    append_json_string(out, path);
    out += ",\"shortName\":";
    append_json_string(out, e.short_name);
    if (!e.unsafe.empty()) {
      out += ",\"unsafeName\":";
      append_json_string(out, e.unsafe);
    }
    out += ",\"size\":";
    out += std::to_string(e.is_dir() ? 0 : e.size);
    out += e.is_dir() ? ",\"isDirectory\":true" : ",\"isDirectory\":false";
    out += ",\"attributes\":";
    out += std::to_string(e.attr);
    out += ",\"modified\":\"";
    out += fat_time_iso(e.modify_date, e.modify_time);
    out += "\",\"extents\":[";
    if (i < extents.size()) {
      bool first = true;
      for (const Extent& x : extents[i]) {
        if (!first) out.push_back(',');
        first = false;
        out.push_back('[');
        out += std::to_string(x.offset);
        out.push_back(',');
        out += std::to_string(x.length);
        out.push_back(']');
      }
    }
    out += "]}\n";
    cur.entries++;
    if (out.size() >= frame_bytes) {
      frames.push_back(std::move(cur));
      cur = CatalogFrame{};
    }
  }
  if (cur.entries > 0) frames.push_back(std::move(cur));
  return frames;
}

}  // namespace lowtide::fat
