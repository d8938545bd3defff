// Advisory whole-file locks (flock): released by the kernel when the holder
// dies, so a crashed writer never leaves a repository locked.
#pragma once

namespace lowtide::host {

// Tries to take an exclusive lock on `fd` without waiting. Returns false if
// another open file description holds it; throws io::IoError on other errors.
bool try_lock_exclusive(int fd);

// Tries to take a shared lock on `fd` without waiting: any number of shared
// holders at once, none while an exclusive one holds it. Same results.
bool try_lock_shared(int fd);

}  // namespace lowtide::host
