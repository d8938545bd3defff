// Async read engines: keep up to N aligned reads in flight over a list of
// extents, and hand back each completed block with its latency.
//
// Two engines share the bookkeeping in ReadEngine: UringEngine (one thread
// driving an io_uring) and ThreadEngine (a pool of threads doing pread).
// The JS side talks to an engine only through take/release/set_* /
// request_stop/join; engine threads never touch JS values.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "io/aligned_memory.h"
#include "io/block_source.h"
#include "io/io_error.h"

namespace lowtide::io {

// Bytes [offset, offset+length) of the source: 16 bytes, as a read plan
// may hold millions of them.
struct Extent {
  uint64_t offset;
  uint64_t length;
};

struct ReadConfig {
  uint32_t block_size = 1 << 20;      // request size now (bytes)
  uint32_t max_block_size = 1 << 20;  // largest request size ever asked for
  uint32_t queue_depth = 32;          // reads in flight now
  uint32_t max_queue_depth = 32;      // largest queue depth ever asked for
  uint32_t held_buffers = 4;          // blocks the consumer may hold besides those in flight
  bool ordered = true;                // deliver blocks in request order
  uint64_t pacing_ns = 0;             // minimum time between submissions
  // Requests are cut at multiples of block_size from each extent's start
  // instead of at absolute multiples of block_size and max_block_size: for
  // extents that are pieces of another address space (a guest view's pieces
  // of a layer file), each already crossing no multiple of max_block_size
  // there, so that a request is a whole block however the piece lies in the file.
  bool split_within_extents = false;
  // Empty, or one entry per extent: with a device given to the engine, an
  // extent whose entry is >= 0 is read from the device at that offset instead
  // (an offset table: a file's blocks read straight from the block device
  // under its file system); blocks still carry source offsets.
  std::vector<int64_t> device_offsets;
  // Or, with a device given to the engine: the runs of an offset table, as
  // [offset, length, device offset] triples of doubles (sorted by offset, not
  // overlapping, lengths above zero; device offset -1: read from the source).
  // Requests are cut where runs end; a request inside a run with a device
  // offset is read from the device, anything else from the source. Read in
  // place like extent_pairs: a plan of millions of extents is split on the
  // fly, without a list of its pieces. Whoever sets it keeps the triples alive
  // and unchanged until the engine is joined.
  const double* device_runs = nullptr;
  size_t device_run_count = 0;
  // When set: the extents, as [offset, length] pairs of doubles (integers,
  // lengths above zero), read in place instead of the `extents` vector: a plan
  // of millions of extents is not copied. Whoever sets it keeps the pairs
  // alive and unchanged until the engine is joined.
  const double* extent_pairs = nullptr;
  size_t extent_count = 0;
};

// One delivered block: bytes [offset, offset+length) of the source are at
// slab + slot * slot_size + data_offset.
struct Completion {
  uint64_t offset;
  uint32_t length;
  uint32_t slot;
  uint32_t data_offset;
  uint64_t latency_ns;
};

struct EngineStats {
  uint64_t requests_completed = 0;
  uint64_t bytes_delivered = 0;
  uint64_t bytes_read = 0;  // including alignment padding and retried parts
  uint32_t queue_depth = 0;
  uint32_t block_size = 0;
  uint32_t in_flight = 0;
  uint32_t max_in_flight_seen = 0;
  uint64_t pacing_ns = 0;
};

// Reads shorter than this (sum of the extents) keep the slab in ordinary,
// unregistered pages that become resident only as requests use them.
constexpr uint64_t kLongReadBytes = uint64_t(512) << 20;

enum class EngineKind { Auto, Uring, Threads };
enum class EngineStatus { Running, Done, Failed, Closed };

class ReadEngine {
 public:
  using Notify = std::function<void()>;

  // Chooses the engine; Auto means io_uring when the kernel gives a ring,
  // the thread pool otherwise. Throws IoError.
  // `device`, when given, serves the extents that have a device_offset.
  static std::unique_ptr<ReadEngine> create(EngineKind kind, std::shared_ptr<BlockSource> source, std::vector<Extent> extents,
                                            const ReadConfig& config, std::shared_ptr<BlockSource> device = nullptr);
  virtual ~ReadEngine();

  virtual const char* name() const = 0;

  // --- called on the JS thread ---
  // `notify` runs on an engine thread whenever blocks become ready while the
  // consumer waits, and once when the engine has finished.
  void start(Notify notify);
  // Moves ready blocks into `out`. When nothing is ready: returns the final
  // status if the engine is done (and fills `error` on failure), otherwise
  // Running and arranges for `notify` to be called.
  EngineStatus take(std::vector<Completion>& out, std::optional<IoError>& error);
  // Gives a delivered block's buffer back. Returns false if the slot was not held.
  bool release(uint32_t slot);
  void set_queue_depth(uint32_t qd);
  void set_block_size(uint32_t bytes);
  // Minimum time between two read submissions (0 = none): the throttle's delay.
  void set_pacing(uint64_t ns);
  // Adds every read handed to the kernel, from here on and so far, to the
  // 64-bit `counter` (atomically; it may live in memory shared with other
  // processes), which `keep` keeps alive. Once per engine.
  void share_reads(std::shared_ptr<void> keep, uint64_t* counter);
  void request_stop();
  // Waits for the engine threads, then drops the engine's reference to the
  // source so its descriptor closes as soon as the JS handle is closed too.
  void join();
  bool finished();
  EngineStats stats();

  unsigned char* slab() const { return slab_->data(); }
  std::shared_ptr<AlignedMemory> slab_memory() const { return slab_; }
  size_t slot_size() const { return slot_size_; }
  size_t slot_count() const { return slot_count_; }

 protected:
  struct Request {
    uint64_t seq = 0;
    uint64_t offset = 0;  // requested (source offset)
    uint32_t length = 0;  // requested
    int fd = -1;          // the descriptor read: the source's or the device's
    bool on_device = false;
    uint64_t roffset = 0;  // where `offset` is in the descriptor read
    uint64_t aoffset = 0;  // aligned start actually read (in the descriptor read)
    uint32_t alength = 0;  // aligned length actually read
    uint32_t done = 0;     // bytes read so far from aoffset
    uint32_t slot = 0;
    uint64_t submit_ns = 0;
  };
  enum SlotState : uint8_t { kFree, kInFlight, kReady, kHeld };

  ReadEngine(std::shared_ptr<BlockSource> source, std::vector<Extent> extents, const ReadConfig& config,
             std::shared_ptr<BlockSource> device);

  virtual void launch() = 0;       // start engine threads
  virtual void wake_locked() = 0;  // wake an engine waiting for slots, queue depth or stop
  virtual void slot_freed_locked() { wake_locked(); }
  virtual void join_threads() = 0;
  virtual void free_resources() {}  // after join: rings, registered buffers

  // Bookkeeping shared by the engines; all *_locked need mu_ held.
  bool can_submit_locked() const;
  // Pacing: may a read be issued at `now`? If not, `wait_ns` is how long until it may.
  bool pace_allows_locked(uint64_t now, uint64_t& wait_ns) const;
  void note_issue_locked(uint64_t now);
  bool cursor_exhausted_locked() const { return extent_index_ >= extent_count(); }
  size_t extent_count() const { return pairs_ ? pair_count_ : extents_.size(); }
  Extent extent_at(size_t i) const { return pairs_ ? Extent{uint64_t(pairs_[2 * i]), uint64_t(pairs_[2 * i + 1])} : extents_[i]; }
  Request next_request_locked();
  // The index of the first device run that ends after `off` (device_run_count_ if none).
  size_t run_after_locked(uint64_t off);
  // Accounts for `res` bytes (or -errno) read by `r`. Returns true when `r`
  // must be resubmitted for its remaining bytes.
  bool on_result_locked(Request& r, int64_t res, uint64_t now_ns);
  // True (and notifies once) when nothing is in flight and no more will be submitted.
  bool maybe_finish_locked();
  void fail_locked(IoError err);
  unsigned char* slot_data(uint32_t slot) const { return slab_->data() + size_t(slot) * slot_size_; }
  static uint64_t now_ns();

  std::shared_ptr<BlockSource> source_;
  std::shared_ptr<BlockSource> device_;  // null unless some extents are read from a device
  const std::string path_;
  const std::string device_path_;
  const int fd_;
  const int device_fd_;
  const uint32_t source_align_;
  const uint32_t device_align_;
  const uint32_t align_;  // the larger of the two: request sizes and slot padding
  std::vector<Extent> extents_;
  const double* pairs_ = nullptr;  // ReadConfig::extent_pairs: used instead of extents_ when set
  size_t pair_count_ = 0;
  std::vector<int64_t> device_offsets_;  // empty, or one per extent (-1: from the source)
  const double* runs_ = nullptr;         // ReadConfig::device_runs
  size_t run_count_ = 0;
  size_t run_hint_ = 0;  // the run the last request was in (the cursor mostly moves forward)
  size_t slot_size_ = 0;
  size_t slot_count_ = 0;
  std::shared_ptr<AlignedMemory> slab_;
  bool long_read_ = false;  // at least kLongReadBytes: huge pages, or registered buffers

  std::mutex mu_;
  Notify notify_;
  // cursor
  size_t extent_index_ = 0;
  uint64_t extent_pos_ = 0;
  uint64_t next_seq_ = 0;
  uint32_t block_size_;
  uint32_t max_block_size_;
  uint32_t queue_depth_;
  uint32_t max_queue_depth_;
  bool ordered_;
  const bool split_within_extents_;
  uint64_t pace_ns_ = 0;
  uint64_t next_issue_ns_ = 0;
  // slots
  std::vector<uint32_t> free_slots_;
  std::vector<uint8_t> slot_state_;
  uint32_t in_flight_ = 0;
  std::shared_ptr<void> shared_reads_keep_;
  uint64_t* shared_reads_ = nullptr;
  // delivery
  std::deque<Completion> ready_;
  std::map<uint64_t, Completion> reorder_;
  uint64_t next_deliver_seq_ = 0;
  bool consumer_waiting_ = false;
  // lifecycle
  bool started_ = false;
  bool stop_requested_ = false;
  bool finished_ = false;
  std::optional<IoError> error_;
  bool joined_ = false;
  EngineStats stats_;
};

}  // namespace lowtide::io
