// Backing files of regular inodes, as named files in a per-mount directory on each tier's file
// system: the memory tier on a private tmpfs mounted huge=within_size (large folios: 2.7–3.7x
// faster 1 MiB I/O than a default tmpfs, measured in design.md), the disk tier in the spill
// directory. A closed file costs no fd: it is opened while a FUSE handle, a move or a check needs
// it, so the daemon's fds are bounded by open files, not by files (one fd per file made 20,000
// files one container's EMFILE for the whole node). Names are `<ino>.<generation>.<serial>`, so a
// restarted daemon can tell which inode a file belonged to. Where no memory directory is given the
// memory tier is a memfd, which has no name and keeps its fd for its life (unit tests only).
// Under passthrough the pages are charged to the writer's memory cgroup.
#pragma once
#include <sys/stat.h>
#include <sys/types.h>
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace ephemera {

enum class Tier : uint8_t { kMemory = 0, kDisk = 1 };

inline const char* TierName(Tier t) { return t == Tier::kMemory ? "memory" : "disk"; }

// An open descriptor of a backing file. Shared by whoever does I/O on it without the lock, so a
// tier move or a last close never closes an fd under a reader.
struct BackingFd {
  int fd;
  explicit BackingFd(int f) : fd(f) {}
  ~BackingFd();
  BackingFd(const BackingFd&) = delete;
  BackingFd& operator=(const BackingFd&) = delete;
};
using FdRef = std::shared_ptr<BackingFd>;

// One regular file's data. Swapped whole (never mutated in place) when an inode moves between
// tiers, so a reader holding the old one keeps a consistent file. The last owner unlinks it.
struct FileData {
  Tier tier = Tier::kMemory;
  int dirfd = -1;     // the tier's directory (owned by the Store); -1: a memfd
  std::string name;   // in that directory
  FdRef pinned;       // held while a FUSE handle is open, and always for a memfd (requires mu_)
  uint64_t size = 0;  // st_size as of the last accounting (a closed file changes only through us)
  // Closes a RELEASE runs after the lock (the pinned fd, the backing id): while any is pending the
  // file still counts as open to the kernel, so a lease check would take it for mapped.
  std::atomic<int> closing{0};
  FileData(Tier t, int dir, std::string n) : tier(t), dirfd(dir), name(std::move(n)) {}
  ~FileData();
  FileData(const FileData&) = delete;
  FileData& operator=(const FileData&) = delete;

  // The pinned fd, or a fresh one opened with `flags` (O_RDWR / O_RDONLY); 0 or errno.
  int Open(int flags, FdRef* out) const;
  // fstat through the pinned fd, else by name: no fd for a closed file. 0 or errno.
  int Stat(struct stat* st) const;
};

struct StoreOptions {
  std::string memory_dir;  // a directory on a huge=within_size tmpfs; empty: memfd
  std::string spill_dir;   // the disk tier (a plain local fs); empty: no disk tier
  // Restartable mounts: take over this existing directory name (`store-<pid>-<n>` of a dead
  // daemon) instead of making a new one, its files untouched.
  std::string adopt_name;
  // Restartable mounts: hold an flock on `<dir>/.held` (its fd goes to the connection holder), so
  // the sweep of dead stores leaves a directory alone while a holder keeps it for a successor.
  bool lock = false;
  // memory_dir is the root of a tmpfs of this mount's own: the store resizes it so its room is the
  // room left under the size quota over both tiers (SetRoom).
  bool memory_tier_sized = false;
  // spill_dir is the root of a file system of this mount's own with a reserve file (`.quota-reserve`,
  // fusefs/daemon/disk-tier.ts) at its root: the store sizes the reserve the same way.
  bool disk_tier_sized = false;
};

class Store {
 public:
  explicit Store(StoreOptions opts);
  ~Store();
  // A new empty backing file for inode `ino`:`generation` on `tier`; 0 or errno.
  // With `opened`, the new file's O_RDWR fd is handed back instead of closed (CREATE pins it at
  // once; a memfd is pinned anyway and leaves it empty).
  int NewFile(Tier tier, uint64_t ino, uint64_t generation, std::shared_ptr<FileData>* out, FdRef* opened = nullptr);
  bool has_disk_tier() const { return disk_dirfd_ >= 0; }
  // Why a tier directory given in the options could not be prepared (errno, 0 = fine): the
  // session refuses to start rather than serve without the tier it was asked for.
  int init_error(std::string* what) const;
  const StoreOptions& options() const { return opts_; }
  // Writes back the disk tier's file system (one syncfs, not one fd per file). 0 or errno.
  int SyncDisk() const;
  // Closes both tier directories and removes them with whatever files they still hold. After it
  // the store holds no reference to either tier's file system, so the tiers can be unmounted at
  // once (not lazily) and nothing they held stays charged to anyone. Idempotent.
  void Release();
  // Sets the bytes writers may still allocate on `tier` to `room` (rounded down to a page or a
  // block, never less than one page on the memory tier: a tmpfs of size 0 would be unlimited).
  // Under passthrough the kernel writes backing files without asking us, so the only place a
  // quota over both tiers can answer ENOSPC to a growing file is each tier's own file system: the
  // memory tier's tmpfs is resized to what it holds plus `room`, the disk tier's reserve file takes
  // all but `room` of its free space. A no-op on a tier that is not sized. 0 or errno.
  int SetRoom(Tier tier, uint64_t room);
  bool tier_sized(Tier tier) const {
    return tier == Tier::kMemory ? opts_.memory_tier_sized && memory_dirfd_ >= 0 : opts_.disk_tier_sized && disk_dirfd_ >= 0;
  }
  // This mount's directory name on both tiers (`store-<pid>-<n>`).
  const std::string& name() const { return name_; }
  // The tier's directory fd (-1: none); for a successor rebuilding FileData from its journal.
  int dirfd(Tier t) const { return t == Tier::kMemory ? memory_dirfd_ : disk_dirfd_; }
  // Names made from now on use serials from `next` (past every name a predecessor made).
  void set_next_serial(uint64_t next) { serial_ = next; }
  // A successor that failed to take over: the directories and files stay for the next one (the
  // holder still keeps the connection), so the destructor only closes fds.
  void Disown() { disowned_ = true; }
  bool disowned() const { return disowned_; }
  // The fds holding the `.held` locks (owned by the store; dup them to hand them on).
  const std::vector<int>& lock_fds() const { return lock_fds_; }

 private:
  int Prepare(const std::string& root, int* dirfd);
  StoreOptions opts_;
  std::string name_;
  int memory_dirfd_ = -1, disk_dirfd_ = -1;
  int memory_error_ = 0, disk_error_ = 0;
  std::atomic<uint64_t> serial_{0};
  std::vector<int> lock_fds_;
  bool disowned_ = false;
  int reserve_fd_ = -1;  // the disk tier's `.quota-reserve`, opened at the first SetRoom
};

// The lock file a restartable store holds in its directory (see StoreOptions::lock).
constexpr const char* kHeldLockName = ".held";

// Removes `store-<pid>-*` directories under `root` whose process is gone (a killed daemon's
// files: they belong to no mount any more). Returns how many it removed.
int SweepDeadStores(const std::string& root);

}  // namespace ephemera
