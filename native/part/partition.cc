#include "part/partition.h"

#include <algorithm>
#include <array>
#include <set>

#include "fat/boot_sector.h"

namespace lowtide::part {
namespace {

constexpr const char* kCorrupt = "PARTITION_CORRUPT";

constexpr std::array<uint32_t, 256> make_crc_table() {
  std::array<uint32_t, 256> t{};
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = i;
    for (int k = 0; k < 8; k++) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    t[i] = c;
  }
  return t;
}
constexpr std::array<uint32_t, 256> kCrcTable = make_crc_table();

struct MbrEntry {
  uint8_t status;
  uint8_t type;
  uint32_t start;  // LBA (relative to the table's reference point)
  uint32_t count;
  bool empty() const { return type == 0 || count == 0; }
};

MbrEntry mbr_entry(const fat::Bytes& b, int i) {
  size_t o = 0x1BE + static_cast<size_t>(i) * 16;
  return MbrEntry{b.u8(o), b.u8(o + 4), b.u32(o + 8), b.u32(o + 12)};
}

bool is_extended(uint8_t t) { return t == 0x05 || t == 0x0F || t == 0x85; }

const char* mbr_type_name(uint8_t t) {
  switch (t) {
    case 0x01: return "FAT12";
    case 0x04: return "FAT16 <32M";
    case 0x05: return "Extended";
    case 0x06: return "FAT16";
    case 0x07: return "HPFS/NTFS/exFAT";
    case 0x0B: return "W95 FAT32";
    case 0x0C: return "W95 FAT32 (LBA)";
    case 0x0E: return "W95 FAT16 (LBA)";
    case 0x0F: return "W95 Ext'd (LBA)";
    case 0x11: return "Hidden FAT12";
    case 0x14: return "Hidden FAT16 <32M";
    case 0x16: return "Hidden FAT16";
    case 0x17: return "Hidden HPFS/NTFS";
    case 0x1B: return "Hidden W95 FAT32";
    case 0x1C: return "Hidden W95 FAT32 (LBA)";
    case 0x1E: return "Hidden W95 FAT16 (LBA)";
    case 0x27: return "Hidden NTFS WinRE";
    case 0x82: return "Linux swap / Solaris";
    case 0x83: return "Linux";
    case 0x85: return "Linux extended";
    case 0x8E: return "Linux LVM";
    case 0xA5: return "FreeBSD";
    case 0xA6: return "OpenBSD";
    case 0xA9: return "NetBSD";
    case 0xAF: return "HFS / HFS+";
    case 0xEE: return "GPT";
    case 0xEF: return "EFI (FAT-12/16/32)";
    case 0xFB: return "VMware VMFS";
    case 0xFD: return "Linux raid autodetect";
  }
  return "";
}

struct GuidName {
  const char* guid;
  const char* name;
};
constexpr GuidName kGptTypes[] = {
    {"C12A7328-F81F-11D2-BA4B-00A0C93EC93B", "EFI System"},
    {"024DEE41-33E7-11D3-9D69-0008C781F39F", "MBR partition scheme"},
    {"21686148-6449-6E6F-744E-656564454649", "BIOS boot"},
    {"E3C9E316-0B5C-4DB8-817D-F92DF00215AE", "Microsoft reserved"},
    {"EBD0A0A2-B9E5-4433-87C0-68B6B72699C7", "Microsoft basic data"},
    {"5808C8AA-7E8F-42E0-85D2-E1E90434CFB3", "Microsoft LDM metadata"},
    {"AF9B60A0-1431-4F62-BC68-3311714A69AD", "Microsoft LDM data"},
    {"DE94BBA4-06D1-4D40-A16A-BFD50179D6AC", "Windows recovery environment"},
    {"E75CAF8F-F680-4CEE-AFA3-B001E56EFC2D", "Microsoft Storage Spaces"},
    {"0657FD6D-A4AB-43C4-84E5-0933C84B4F4F", "Linux swap"},
    {"0FC63DAF-8483-4772-8E79-3D69D8477DE4", "Linux filesystem"},
    {"3B8F8425-20E0-4F3B-907F-1A25A76F98E8", "Linux server data"},
    {"44479540-F297-41B2-9AF7-D131D5F0458A", "Linux root (x86)"},
    {"4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709", "Linux root (x86-64)"},
    {"B921B045-1DF0-41C3-AF44-4C6F280D3FAE", "Linux root (ARM-64)"},
    {"69DAD710-2CE4-4E3C-B16C-21A1D49ABED3", "Linux root (ARM)"},
    {"933AC7E1-2EB4-4F13-B844-0E14E2AEF915", "Linux home"},
    {"BC13C2FF-59E6-4262-A352-B275FD6F7172", "Linux extended boot"},
    {"E6D6D379-F507-44C2-A23C-238F2A3DF928", "Linux LVM"},
    {"A19D880F-05FC-4D3B-A006-743F0F84911E", "Linux RAID"},
    {"CA7D7CCB-63ED-4C53-861C-1742536059CC", "Linux LUKS"},
    {"48465300-0000-11AA-AA11-00306543ECAC", "Apple HFS/HFS+"},
    {"7C3457EF-0000-11AA-AA11-00306543ECAC", "Apple APFS"},
    {"516E7CB6-6ECF-11D6-8FF8-00022D09712B", "FreeBSD UFS"},
    {"516E7CBA-6ECF-11D6-8FF8-00022D09712B", "FreeBSD ZFS"},
    {"6A898CC3-1DD2-11B2-99A6-080020736631", "Solaris /usr & Apple ZFS"},
};

const char* gpt_type_name(const std::string& guid) {
  for (const GuidName& g : kGptTypes)
    if (guid == g.guid) return g.name;
  return "";
}

bool all_zero(const uint8_t* p, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (p[i]) return false;
  return true;
}

struct GptResult {
  bool ok = false;
  std::string why;  // when !ok
  PartitionTable table;
};

// Reads and validates a GPT header at `lba` (expected to say it is at `lba`)
// and its entry array; on success fills a table.
GptResult try_gpt(ByteReader& r, uint32_t ss, uint64_t lba) {
  GptResult res;
  const uint64_t disk = r.size();
  const uint64_t sectors = disk / ss;
  if (lba >= sectors) {
    res.why = "the disk is too small for a header at LBA " + std::to_string(lba);
    return res;
  }
  std::vector<uint8_t> hdr(ss);
  r.read(lba * ss, hdr.data(), ss);
  fat::Bytes b(hdr.data(), ss, lba * ss, kCorrupt, "GPT header");
  if (!b.equals(0, "EFI PART", 8)) {
    res.why = "no 'EFI PART' signature at byte offset " + std::to_string(lba * ss);
    return res;
  }
  uint32_t hsize = b.u32(12);
  if (hsize < 92 || hsize > ss) {
    res.why = "header size " + std::to_string(hsize) + " is invalid";
    return res;
  }
  uint32_t want_crc = b.u32(16);
  std::vector<uint8_t> tmp(hdr.begin(), hdr.begin() + hsize);
  std::fill(tmp.begin() + 16, tmp.begin() + 20, 0);
  if (crc32(tmp.data(), tmp.size()) != want_crc) {
    res.why = "header CRC32 mismatch at byte offset " + std::to_string(lba * ss + 16);
    return res;
  }
  if (b.u64(24) != lba) {
    res.why = "header says it is at LBA " + std::to_string(b.u64(24)) + ", found at " + std::to_string(lba);
    return res;
  }
  uint64_t first_usable = b.u64(40), last_usable = b.u64(48);
  uint64_t entries_lba = b.u64(72);
  uint32_t nentries = b.u32(80), esize = b.u32(84), entries_crc = b.u32(88);
  if (esize < 128 || esize % 8 != 0 || esize > 4096) {
    res.why = "partition entry size " + std::to_string(esize) + " is invalid";
    return res;
  }
  if (nentries == 0 || static_cast<uint64_t>(nentries) * esize > (16u << 20)) {
    res.why = "partition entry count " + std::to_string(nentries) + " is invalid";
    return res;
  }
  const uint64_t ebytes = static_cast<uint64_t>(nentries) * esize;
  if (entries_lba >= sectors || ebytes > (sectors - entries_lba) * ss) {
    res.why = "partition entries at LBA " + std::to_string(entries_lba) + " pass the end of the disk";
    return res;
  }
  if (first_usable > last_usable + 1) {
    res.why = "first usable LBA " + std::to_string(first_usable) + " is after last usable LBA " + std::to_string(last_usable);
    return res;
  }
  std::vector<uint8_t> ent(static_cast<size_t>(ebytes));
  r.read(entries_lba * ss, ent.data(), ent.size());
  if (crc32(ent.data(), ent.size()) != entries_crc) {
    res.why = "partition entry array CRC32 mismatch (entries at byte offset " + std::to_string(entries_lba * ss) + ")";
    return res;
  }

  PartitionTable& t = res.table;
  t.kind = TableKind::Gpt;
  t.sector_size = ss;
  t.disk_size = disk;
  t.disk_guid = format_guid(b.at(56, 16));
  if (last_usable >= sectors)
    t.warnings.push_back("GPT last usable LBA " + std::to_string(last_usable) + " is past the end of the disk (truncated?)");
  fat::Bytes eb(ent.data(), ent.size(), entries_lba * ss, kCorrupt, "GPT partition entry");
  for (uint32_t i = 0; i < nentries; i++) {
    size_t o = static_cast<size_t>(i) * esize;
    if (all_zero(eb.at(o, 16), 16)) continue;
    uint64_t first = eb.u64(o + 32), last = eb.u64(o + 40);
    if (first > last)
      eb.fail(o + 32, "partition " + std::to_string(i + 1) + " ends (LBA " + std::to_string(last) + ") before it starts (LBA " +
                          std::to_string(first) + ")");
    if (last >= (UINT64_MAX / ss) - 1) eb.fail(o + 40, "partition " + std::to_string(i + 1) + " end LBA is implausible");
    Partition p;
    p.index = i + 1;
    p.start = first * ss;
    p.size = (last - first + 1) * ss;
    p.type_guid = format_guid(eb.at(o, 16));
    p.unique_guid = format_guid(eb.at(o + 16, 16));
    p.attributes = eb.u64(o + 48);
    uint16_t units[36];
    size_t n = 0;
    size_t name_units = std::min<size_t>(36, (esize - 56) / 2);
    for (; n < name_units; n++) {
      units[n] = eb.u16(o + 56 + n * 2);
      if (units[n] == 0) break;
    }
    p.name = fat::utf16_to_utf8(units, n);
    p.type_name = gpt_type_name(p.type_guid);
    if (first < first_usable || last > last_usable)
      t.warnings.push_back("partition " + std::to_string(p.index) + " lies outside the usable LBAs");
    if (p.start >= disk || p.size > disk - p.start) {
      p.truncated = true;
      t.warnings.push_back("partition " + std::to_string(p.index) + " reaches past the end of the disk");
    }
    t.partitions.push_back(std::move(p));
  }
  res.ok = true;
  return res;
}

}  // namespace

uint32_t crc32(const uint8_t* p, size_t n) {
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; i++) c = kCrcTable[(c ^ p[i]) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

std::string format_guid(const uint8_t* p) {
  static const char* d = "0123456789ABCDEF";
  // Mixed endian: the first three fields are little-endian.
  const int order[16] = {3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15};
  std::string s;
  for (int i = 0; i < 16; i++) {
    if (i == 4 || i == 6 || i == 8 || i == 10) s.push_back('-');
    uint8_t v = p[order[i]];
    s.push_back(d[v >> 4]);
    s.push_back(d[v & 15]);
  }
  return s;
}

const char* kind_name(TableKind k) {
  switch (k) {
    case TableKind::None: return "none";
    case TableKind::Mbr: return "mbr";
    case TableKind::Gpt: return "gpt";
  }
  return "none";
}

std::string detect_fs(ByteReader& r, uint64_t start, uint64_t size) {
  const uint64_t disk = r.size();
  if (start >= disk) return "unknown";
  uint64_t avail = std::min<uint64_t>(size, disk - start);
  size_t n = static_cast<size_t>(std::min<uint64_t>(avail, 0x10048));
  if (n < 512) return "unknown";
  std::vector<uint8_t> buf(n);
  r.read(start, buf.data(), n);
  auto at = [&](size_t off, const char* s, size_t len) { return off + len <= n && std::equal(s, s + len, buf.data() + off); };
  if (at(3, "NTFS    ", 8)) return "ntfs";
  if (at(3, "EXFAT   ", 8)) return "exfat";
  fat::FatType t;
  // Recognised by its boot sector alone; a volume cut short by a truncated
  // disk is still FAT here (opening it reports the damage).
  if (fat::looks_like_fat(buf.data(), n, UINT64_MAX, &t)) return fat::fat_type_name(t);
  if (at(0, "XFSB", 4)) return "xfs";
  if (n >= 0x43A && buf[0x438] == 0x53 && buf[0x439] == 0xEF) return "ext";
  if (at(0x10040, "_BHRfS_M", 8)) return "btrfs";
  if (at(4086, "SWAPSPACE2", 10) || at(4086, "SWAP-SPACE", 10)) return "swap";
  return "unknown";
}

PartitionTable read_partition_table(ByteReader& r) {
  PartitionTable t;
  const uint64_t disk = r.size();
  t.disk_size = disk;
  if (disk < 512) {
    t.warnings.push_back("the disk is smaller than one sector");
    return t;
  }
  uint8_t s0[512];
  r.read(0, s0, sizeof s0);
  fat::Bytes b(s0, sizeof s0, 0, kCorrupt, "MBR");
  const bool sig = b.u8(510) == 0x55 && b.u8(511) == 0xAA;
  MbrEntry e[4];
  bool statuses_ok = true, any = false, pmbr = false, plausible = true;
  const uint64_t sectors512 = disk / 512;
  for (int i = 0; i < 4; i++) {
    e[i] = mbr_entry(b, i);
    if (e[i].status != 0x00 && e[i].status != 0x80) statuses_ok = false;
    if (!e[i].empty()) {
      any = true;
      if (e[i].type == 0xEE) pmbr = true;
      if (e[i].start == 0 || e[i].start >= sectors512) plausible = false;
    }
  }
  const bool mbr_valid = sig && statuses_ok;

  // GPT: behind a protective MBR, or a bare header at LBA 1.
  auto signature_at = [&](uint64_t off) {
    if (off + 8 > disk) return false;
    uint8_t sg[8];
    r.read(off, sg, 8);
    return std::equal(sg, sg + 8, reinterpret_cast<const uint8_t*>("EFI PART"));
  };
  const bool hdr512 = signature_at(512), hdr4k = signature_at(4096);
  if ((mbr_valid && pmbr) || hdr512 || hdr4k) {
    std::vector<uint32_t> sizes;
    if (hdr4k && !hdr512) sizes = {4096, 512};
    else sizes = {512, 4096};
    std::string why_primary;
    for (uint32_t ss : sizes) {
      GptResult g = try_gpt(r, ss, 1);
      if (g.ok) {
        // Check the backup too (a warning only).
        uint64_t last = disk / ss - 1;
        GptResult bk = try_gpt(r, ss, last);
        if (!bk.ok) g.table.warnings.push_back("backup GPT header invalid: " + bk.why);
        g.table.mbr_signature = b.u32(440);
        if (!pmbr) g.table.warnings.push_back("GPT without a protective MBR");
        t = std::move(g.table);
        for (Partition& p : t.partitions) p.fs = p.start < disk ? detect_fs(r, p.start, p.size) : "unknown";
        return t;
      }
      if (why_primary.empty() || (ss == 512 && hdr512) || (ss == 4096 && hdr4k)) why_primary = g.why;
    }
    for (uint32_t ss : sizes) {
      if (disk / ss < 3) continue;
      GptResult g = try_gpt(r, ss, disk / ss - 1);
      if (g.ok) {
        t = std::move(g.table);
        t.gpt_backup_used = true;
        t.mbr_signature = b.u32(440);
        t.warnings.insert(t.warnings.begin(), "primary GPT header invalid (" + why_primary + "); using the backup at the last LBA");
        for (Partition& p : t.partitions) p.fs = p.start < disk ? detect_fs(r, p.start, p.size) : "unknown";
        return t;
      }
    }
    if (mbr_valid && pmbr)
      fat::corrupt(kCorrupt, "GPT header", 512, "protective MBR present but neither GPT header is valid (" + why_primary + ")");
    t.warnings.push_back("a GPT signature was found but no valid GPT header (" + why_primary + "); ignored");
  }

  const std::string fs0 = detect_fs(r, 0, disk);
  const bool fs_at_0 = fs0 != "unknown";
  if (mbr_valid && any && (plausible || !fs_at_0)) {
    t.kind = TableKind::Mbr;
    t.mbr_signature = b.u32(440);
    uint32_t next_logical = 5;
    for (int i = 0; i < 4; i++) {
      if (e[i].empty()) continue;
      Partition p;
      p.index = static_cast<uint32_t>(i + 1);
      p.mbr_type = e[i].type;
      p.bootable = e[i].status == 0x80;
      p.start = static_cast<uint64_t>(e[i].start) * 512;
      p.size = static_cast<uint64_t>(e[i].count) * 512;
      p.type_name = mbr_type_name(e[i].type);
      p.extended = is_extended(e[i].type);
      if (p.start >= disk || p.size > disk - p.start) {
        p.truncated = true;
        t.warnings.push_back("partition " + std::to_string(p.index) + " reaches past the end of the disk");
      }
      t.partitions.push_back(p);
      if (!p.extended) continue;

      // The chain of extended boot records, bounded and loop-checked.
      const uint64_t ext_start = e[i].start, ext_count = e[i].count;
      uint64_t cur = ext_start;
      std::set<uint64_t> seen;
      for (int hops = 0;; hops++) {
        if (hops >= 256) fat::corrupt(kCorrupt, "extended boot record", cur * 512, "more than 256 logical partitions in the chain");
        if (!seen.insert(cur).second)
          fat::corrupt(kCorrupt, "extended boot record", cur * 512, "the EBR chain loops back to LBA " + std::to_string(cur));
        if ((cur + 1) * 512 > disk) {
          t.warnings.push_back("extended boot record at LBA " + std::to_string(cur) + " is past the end of the disk");
          break;
        }
        uint8_t es[512];
        r.read(cur * 512, es, sizeof es);
        fat::Bytes eb(es, sizeof es, cur * 512, kCorrupt, "extended boot record");
        if (eb.u8(510) != 0x55 || eb.u8(511) != 0xAA) {
          t.warnings.push_back("extended boot record at LBA " + std::to_string(cur) + " has no 0x55AA signature; chain ends");
          break;
        }
        uint64_t next = 0;
        for (int k = 0; k < 4; k++) {
          MbrEntry le = mbr_entry(eb, k);
          if (le.empty()) continue;
          if (is_extended(le.type)) {
            if (next == 0) next = ext_start + le.start;
            continue;
          }
          Partition lp;
          lp.index = next_logical++;
          lp.logical = true;
          lp.mbr_type = le.type;
          lp.bootable = le.status == 0x80;
          lp.start = (cur + le.start) * 512;
          lp.size = static_cast<uint64_t>(le.count) * 512;
          lp.type_name = mbr_type_name(le.type);
          if (cur + le.start + le.count > ext_start + ext_count)
            t.warnings.push_back("logical partition " + std::to_string(lp.index) + " reaches past its extended partition");
          if (lp.start >= disk || lp.size > disk - lp.start) {
            lp.truncated = true;
            t.warnings.push_back("partition " + std::to_string(lp.index) + " reaches past the end of the disk");
          }
          t.partitions.push_back(lp);
        }
        if (next == 0) break;
        if (next < ext_start || next >= ext_start + ext_count)
          fat::corrupt(kCorrupt, "extended boot record", cur * 512,
                       "link to the next EBR (LBA " + std::to_string(next) + ") lies outside the extended partition");
        cur = next;
      }
    }
    for (Partition& p : t.partitions) p.fs = (p.extended || p.start >= disk) ? "" : detect_fs(r, p.start, p.size);
    return t;
  }
  if (fs_at_0) {
    t.kind = TableKind::None;
    Partition p;
    p.index = 0;
    p.start = 0;
    p.size = disk;
    p.fs = fs0;
    p.type_name = "whole disk";
    t.partitions.push_back(p);
    return t;
  }
  if (mbr_valid) t.kind = TableKind::Mbr;  // an empty table
  return t;
}

}  // namespace lowtide::part
