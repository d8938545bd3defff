// The two read engines behind ReadEngine::create (io/read_engine.h), each in
// its own file: io_uring (uring_engine.cc) and a pool of pread threads
// (thread_engine.cc). Throw IoError.
#pragma once

#include <memory>
#include <vector>

#include "io/read_engine.h"

namespace lowtide::io {

std::unique_ptr<ReadEngine> make_uring_engine(std::shared_ptr<BlockSource> source, std::vector<Extent> extents,
                                              const ReadConfig& config, std::shared_ptr<BlockSource> device);
std::unique_ptr<ReadEngine> make_thread_engine(std::shared_ptr<BlockSource> source, std::vector<Extent> extents,
                                               const ReadConfig& config, std::shared_ptr<BlockSource> device);

}  // namespace lowtide::io
