// Backing files of regular inodes. The memory tier is a file on a private tmpfs mounted
// huge=within_size (large folios: 2.7–3.7x faster 1 MiB I/O than a default tmpfs, measured in
// design.md) created with O_TMPFILE so it has no name anyone could find, or a memfd where no such
// tmpfs was given. Under passthrough the pages are charged to the writer's memory cgroup.
#pragma once
#include <sys/types.h>
#include <cstdint>
#include <string>

namespace ephemera {

enum class Tier : uint8_t { kMemory = 0, kDisk = 1 };

inline const char* TierName(Tier t) { return t == Tier::kMemory ? "memory" : "disk"; }

// One regular file's data; owns its fd. Swapped whole (never mutated in place) when an inode
// moves between tiers, so a reader holding the old one keeps a consistent file.
struct FileData {
  int fd = -1;
  Tier tier = Tier::kMemory;
  FileData(int f, Tier t) : fd(f), tier(t) {}
  ~FileData();
  FileData(const FileData&) = delete;
  FileData& operator=(const FileData&) = delete;
};

struct StoreOptions {
  std::string memory_dir;  // a directory on a huge=within_size tmpfs; empty: memfd
  std::string spill_dir;   // the disk tier (a plain local fs); empty: no disk tier
};

class Store {
 public:
  explicit Store(StoreOptions opts) : opts_(std::move(opts)) {}
  // A new empty backing file on `tier`, or -errno.
  int NewFile(Tier tier, uint64_t ino) const;
  bool has_disk_tier() const { return !opts_.spill_dir.empty(); }
  const StoreOptions& options() const { return opts_; }

 private:
  StoreOptions opts_;
};

}  // namespace ephemera
