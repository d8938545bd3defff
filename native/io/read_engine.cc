// The bookkeeping both read engines share, and the choice between them.
#include "io/read_engine.h"

#include <algorithm>
#include <cerrno>
#include <ctime>

#include "io/engines.h"

namespace lowtide::io {
namespace {

uint64_t round_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

std::string range_text(uint64_t off, uint64_t len) { return "[" + std::to_string(off) + ", " + std::to_string(off + len) + ")"; }

}  // namespace

uint64_t ReadEngine::now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
}

static uint32_t align_of(const BlockSource* s) {
  if (s == nullptr) return 1;
  return s->geometry().direct ? s->geometry().logical_sector_size : 1;
}

ReadEngine::ReadEngine(std::shared_ptr<BlockSource> source, std::vector<Extent> extents, const ReadConfig& c,
                       std::shared_ptr<BlockSource> device)
    : source_(std::move(source)),
      device_(std::move(device)),
      path_(source_->path()),
      device_path_(device_ ? device_->path() : std::string()),
      fd_(source_->fd()),
      device_fd_(device_ ? device_->fd() : -1),
      source_align_(align_of(source_.get())),
      device_align_(align_of(device_.get())),
      align_(std::max(source_align_, device_align_)),
      extents_(std::move(extents)),
      pairs_(c.extent_pairs),
      pair_count_(c.extent_pairs ? c.extent_count : 0),
      device_offsets_(c.device_offsets),
      runs_(c.device_runs),
      run_count_(c.device_runs ? c.device_run_count : 0),
      block_size_(c.block_size),
      max_block_size_(std::max(c.block_size, c.max_block_size)),
      queue_depth_(std::max<uint32_t>(1, c.queue_depth)),
      max_queue_depth_(std::max(std::max<uint32_t>(1, c.queue_depth), c.max_queue_depth)),
      ordered_(c.ordered),
      split_within_extents_(c.split_within_extents) {
  if (!device_offsets_.empty() && device_offsets_.size() != extent_count())
    throw IoError("INVALID_ARGUMENT", "device offsets must have one entry per extent");
  for (int64_t d : device_offsets_) {
    if (d >= 0 && !device_) throw IoError("INVALID_ARGUMENT", "an extent is mapped to a device but no device was given");
  }
  if (runs_ && !device_offsets_.empty()) throw IoError("INVALID_ARGUMENT", "device offsets and device runs cannot both be given");
  for (size_t i = 0; i < run_count_; ++i) {
    const double off = runs_[3 * i], len = runs_[3 * i + 1], dev = runs_[3 * i + 2];
    if (!(len > 0) || !(off >= 0) || (i > 0 && off < runs_[3 * i - 3] + runs_[3 * i - 2]))
      throw IoError("INVALID_ARGUMENT", "device runs must be sorted, not overlapping and not empty");
    if (dev >= 0 && !device_) throw IoError("INVALID_ARGUMENT", "a run is mapped to a device but no device was given");
  }
  for (size_t i = 0; i < pair_count_; ++i)
    if (!(pairs_[2 * i + 1] > 0)) throw IoError("INVALID_ARGUMENT", "extents read in place must not be empty");
  if (pairs_) extents_.clear();
  // Drop empty extents (and their device offsets) so the cursor never produces a zero-length request.
  size_t kept = 0;
  for (size_t i = 0; i < extents_.size(); ++i) {
    if (extents_[i].length == 0) continue;
    extents_[kept] = extents_[i];
    if (!device_offsets_.empty()) device_offsets_[kept] = device_offsets_[i];
    ++kept;
  }
  extents_.resize(kept);
  if (!device_offsets_.empty() && !pairs_) device_offsets_.resize(kept);
  // A request may start and end inside a sector: room for one sector of
  // padding on each side, rounded to the memory alignment.
  uint64_t mem_align = std::max<uint64_t>(4096, source_->geometry().memory_alignment);
  if (device_) mem_align = std::max<uint64_t>(mem_align, device_->geometry().memory_alignment);
  slot_size_ = round_up(uint64_t(max_block_size_) + 2ull * align_, mem_align);
  slot_count_ = size_t(max_queue_depth_) + std::max<uint32_t>(1, c.held_buffers);
  // Virtual size only: pages become resident when a slot is first used, and
  // slots are reused LIFO, so resident memory follows the queue depth in use.
  // Huge pages only for long reads: they let a 1 MiB request go to the device
  // in one piece (a device may allow fewer segments per request than a 1 MiB
  // buffer has 4 KiB pages), but a huge page is zeroed whole on first touch,
  // and a short read of small scattered requests touches one per slot, so
  // zeroing can cost more than the read itself. (Nor is a short read's slab
  // registered with io_uring, see UringEngine.) On a virtio disk with cold
  // caches, 31 MB in 147 requests took 115-190 ms with huge pages and 15-38 ms
  // without; 1 GB of used blocks 220-306 ms with, 323-731 ms without.
  uint64_t total = 0;
  for (size_t i = 0; i < extent_count(); ++i) total += extent_at(i).length;
  long_read_ = total >= kLongReadBytes;
  slab_ = std::make_shared<AlignedMemory>(slot_size_ * slot_count_, mem_align, /*huge=*/long_read_);
  slot_state_.assign(slot_count_, kFree);
  free_slots_.reserve(slot_count_);
  for (size_t i = slot_count_; i-- > 0;) free_slots_.push_back(uint32_t(i));
  stats_.queue_depth = queue_depth_;
  stats_.block_size = block_size_;
  pace_ns_ = c.pacing_ns;
  stats_.pacing_ns = c.pacing_ns;
}

ReadEngine::~ReadEngine() = default;

void ReadEngine::start(Notify notify) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    notify_ = std::move(notify);
    started_ = true;
    if (extent_count() == 0) {
      finished_ = true;
      if (notify_) notify_();
      return;
    }
  }
  launch();
}

bool ReadEngine::can_submit_locked() const {
  return !stop_requested_ && !error_ && in_flight_ < queue_depth_ && !free_slots_.empty() && !cursor_exhausted_locked();
}

bool ReadEngine::pace_allows_locked(uint64_t now, uint64_t& wait_ns) const {
  if (pace_ns_ == 0 || now >= next_issue_ns_) return true;
  wait_ns = next_issue_ns_ - now;
  return false;
}

void ReadEngine::note_issue_locked(uint64_t now) {
  // Keep a schedule rather than "now + pace": a late wake-up is made up by the
  // next issue, so a rate cap is met on average; but never bank more than one
  // interval of idle time (no bursts after a pause).
  if (pace_ns_ == 0) return;
  next_issue_ns_ = next_issue_ns_ == 0 ? now + pace_ns_ : std::max(next_issue_ns_, now - std::min(now, pace_ns_)) + pace_ns_;
}

void ReadEngine::share_reads(std::shared_ptr<void> keep, uint64_t* counter) {
  std::lock_guard<std::mutex> lk(mu_);
  if (shared_reads_ != nullptr || counter == nullptr) return;
  __atomic_fetch_add(counter, stats_.requests_completed + in_flight_, __ATOMIC_RELAXED);
  shared_reads_keep_ = std::move(keep);
  shared_reads_ = counter;
}

void ReadEngine::set_pacing(uint64_t ns) {
  std::lock_guard<std::mutex> lk(mu_);
  uint64_t now = now_ns();
  pace_ns_ = ns;
  stats_.pacing_ns = ns;
  // A shorter interval applies at once rather than after the old one ends.
  if (next_issue_ns_ > now + ns) next_issue_ns_ = now + ns;
  if (started_ && !finished_) wake_locked();
}

ReadEngine::Request ReadEngine::next_request_locked() {
  const Extent e = extent_at(extent_index_);
  uint64_t off = e.offset + extent_pos_;
  uint64_t end_of_extent = e.offset + e.length;
  uint64_t bs = block_size_;
  uint64_t mbs = max_block_size_;
  // Split at absolute block boundaries, and never across a multiple of the
  // largest block size: a consumer that works in units of maxBlockSize (the
  // repository's chunks) always gets pieces of one unit, whatever the throttle
  // does to the request size.
  uint64_t boundary =
      split_within_extents_ ? e.offset + ((off - e.offset) / bs + 1) * bs : std::min((off / bs + 1) * bs, (off / mbs + 1) * mbs);
  uint64_t end = std::min(end_of_extent, boundary);
  // Where `off` is on the device, or -1: read from the source.
  int64_t device_at = -1;
  if (!device_offsets_.empty()) {
    if (device_offsets_[extent_index_] >= 0) device_at = device_offsets_[extent_index_] + int64_t(off - e.offset);
  } else if (run_count_ > 0) {
    const size_t k = run_after_locked(off);
    if (k < run_count_) {
      const uint64_t ro = uint64_t(runs_[3 * k]);
      const uint64_t rend = ro + uint64_t(runs_[3 * k + 1]);
      if (ro > off) {
        end = std::min(end, ro);  // before the run: from the source, up to it
      } else {
        end = std::min(end, rend);
        if (runs_[3 * k + 2] >= 0) device_at = int64_t(runs_[3 * k + 2]) + int64_t(off - ro);
      }
    }
  }
  Request r;
  r.seq = next_seq_++;
  r.offset = off;
  r.length = uint32_t(end - off);
  r.on_device = device_at >= 0;
  r.fd = r.on_device ? device_fd_ : fd_;
  r.roffset = r.on_device ? uint64_t(device_at) : off;
  uint64_t a = r.on_device ? device_align_ : source_align_;
  r.aoffset = r.roffset / a * a;
  r.alength = uint32_t(round_up(r.roffset + r.length, a) - r.aoffset);
  extent_pos_ += r.length;
  if (off + r.length >= end_of_extent) {
    ++extent_index_;
    extent_pos_ = 0;
  }
  r.slot = free_slots_.back();
  free_slots_.pop_back();
  slot_state_[r.slot] = kInFlight;
  ++in_flight_;
  if (shared_reads_ != nullptr) __atomic_fetch_add(shared_reads_, 1, __ATOMIC_RELAXED);
  stats_.max_in_flight_seen = std::max(stats_.max_in_flight_seen, in_flight_);
  return r;
}

size_t ReadEngine::run_after_locked(uint64_t off) {
  auto run_end = [&](size_t k) { return uint64_t(runs_[3 * k]) + uint64_t(runs_[3 * k + 1]); };
  // The hint or the run after it, when the cursor moved forward (a sorted plan).
  for (size_t k = run_hint_; k < run_count_ && k < run_hint_ + 2; ++k) {
    if (run_end(k) > off && (k == 0 || run_end(k - 1) <= off)) return run_hint_ = k;
  }
  size_t lo = 0, hi = run_count_;
  while (lo < hi) {
    const size_t mid = lo + (hi - lo) / 2;
    if (run_end(mid) <= off) lo = mid + 1;
    else hi = mid;
  }
  if (lo < run_count_) run_hint_ = lo;
  return lo;
}

bool ReadEngine::on_result_locked(Request& r, int64_t res, uint64_t now) {
  if (res == -EAGAIN || res == -EINTR) return true;  // transient: resubmit the remainder
  if (res < 0) {
    int e = int(-res);
    --in_flight_;
    slot_state_[r.slot] = kFree;
    free_slots_.push_back(r.slot);
    fail_locked(IoError("IO_ERROR",
                        "read of " + (r.on_device ? device_path_ : path_) + " failed at offset " + std::to_string(r.aoffset + r.done) +
                            " (block " + range_text(r.offset, r.length) + "): " + errno_text(e),
                        e, int64_t(r.aoffset + r.done)));
    return false;
  }
  r.done += uint32_t(res);
  stats_.bytes_read += uint64_t(res);
  uint64_t needed = r.roffset + r.length - r.aoffset;
  if (r.done < needed) {
    if (res > 0 && r.done < r.alength) return true;  // short read mid-way: read the rest
    --in_flight_;
    slot_state_[r.slot] = kFree;
    free_slots_.push_back(r.slot);
    uint64_t at = r.aoffset + r.done;
    fail_locked(IoError("SHORT_READ",
                        (r.on_device ? device_path_ : path_) + " ended at offset " + std::to_string(at) + " while reading block " +
                            range_text(r.offset, r.length) + " (was the source truncated?)",
                        0, int64_t(at)));
    return false;
  }
  --in_flight_;
  Completion c{r.offset, r.length, r.slot, uint32_t(r.roffset - r.aoffset), now - r.submit_ns};
  ++stats_.requests_completed;
  stats_.bytes_delivered += r.length;
  if (stop_requested_) {
    slot_state_[r.slot] = kFree;
    free_slots_.push_back(r.slot);
    return false;
  }
  slot_state_[r.slot] = kReady;
  bool was_empty = ready_.empty();
  if (!ordered_ || r.seq == next_deliver_seq_) {
    ready_.push_back(c);
    if (ordered_) {
      ++next_deliver_seq_;
      for (auto it = reorder_.begin(); it != reorder_.end() && it->first == next_deliver_seq_;) {
        ready_.push_back(it->second);
        ++next_deliver_seq_;
        it = reorder_.erase(it);
      }
    }
  } else {
    reorder_.emplace(r.seq, c);
  }
  if (was_empty && !ready_.empty() && consumer_waiting_) {
    consumer_waiting_ = false;
    if (notify_) notify_();
  }
  return false;
}

void ReadEngine::fail_locked(IoError err) {
  if (!error_) error_ = std::move(err);
}

bool ReadEngine::maybe_finish_locked() {
  if (finished_) return true;
  if (in_flight_ != 0) return false;
  if (!(stop_requested_ || error_ || cursor_exhausted_locked())) return false;
  finished_ = true;
  consumer_waiting_ = false;
  if (notify_) notify_();
  return true;
}

EngineStatus ReadEngine::take(std::vector<Completion>& out, std::optional<IoError>& error) {
  std::lock_guard<std::mutex> lk(mu_);
  if (stop_requested_) {
    return finished_ ? EngineStatus::Closed : EngineStatus::Running;
  }
  if (!ready_.empty()) {
    for (const Completion& c : ready_) {
      slot_state_[c.slot] = kHeld;
      out.push_back(c);
    }
    ready_.clear();
    return EngineStatus::Running;
  }
  if (error_ && in_flight_ == 0) {
    error = *error_;
    return EngineStatus::Failed;
  }
  if (finished_) return EngineStatus::Done;
  consumer_waiting_ = true;
  return EngineStatus::Running;
}

bool ReadEngine::release(uint32_t slot) {
  std::lock_guard<std::mutex> lk(mu_);
  if (slot >= slot_count_ || slot_state_[slot] != kHeld) return false;
  slot_state_[slot] = kFree;
  free_slots_.push_back(slot);
  if (!finished_) slot_freed_locked();
  return true;
}

void ReadEngine::set_queue_depth(uint32_t qd) {
  std::lock_guard<std::mutex> lk(mu_);
  queue_depth_ = std::clamp<uint32_t>(qd, 1, max_queue_depth_);
  stats_.queue_depth = queue_depth_;
  if (started_ && !finished_) wake_locked();
}

void ReadEngine::set_block_size(uint32_t bytes) {
  std::lock_guard<std::mutex> lk(mu_);
  uint32_t b = std::clamp<uint32_t>(bytes, align_, max_block_size_);
  b = b / align_ * align_;
  block_size_ = std::max<uint32_t>(b, align_);
  stats_.block_size = block_size_;
}

void ReadEngine::request_stop() {
  std::lock_guard<std::mutex> lk(mu_);
  stop_requested_ = true;
  // Blocks waiting for the consumer are dropped: their slots are free again.
  for (const Completion& c : ready_) {
    slot_state_[c.slot] = kFree;
    free_slots_.push_back(c.slot);
  }
  ready_.clear();
  for (auto& [seq, c] : reorder_) {
    slot_state_[c.slot] = kFree;
    free_slots_.push_back(c.slot);
  }
  reorder_.clear();
  if (!started_) {
    finished_ = true;
    return;
  }
  if (!finished_) wake_locked();
}

bool ReadEngine::finished() {
  std::lock_guard<std::mutex> lk(mu_);
  return finished_;
}

void ReadEngine::join() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (joined_) return;
    joined_ = true;
  }
  join_threads();
  free_resources();
  std::lock_guard<std::mutex> lk(mu_);
  notify_ = nullptr;
  source_.reset();
  device_.reset();
}

EngineStats ReadEngine::stats() {
  std::lock_guard<std::mutex> lk(mu_);
  EngineStats s = stats_;
  s.in_flight = in_flight_;
  return s;
}

std::unique_ptr<ReadEngine> ReadEngine::create(EngineKind kind, std::shared_ptr<BlockSource> source, std::vector<Extent> extents,
                                               const ReadConfig& config, std::shared_ptr<BlockSource> device) {
  if (kind == EngineKind::Threads) return make_thread_engine(std::move(source), std::move(extents), config, std::move(device));
  try {
    return make_uring_engine(source, extents, config, device);
  } catch (const IoError& e) {
    if (kind == EngineKind::Uring || e.code() == "INVALID_ARGUMENT") throw;
    return make_thread_engine(std::move(source), std::move(extents), config, std::move(device));
  }
}

}  // namespace lowtide::io
