#include "store.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <cerrno>
#include <cstdlib>
#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

namespace ephemera {
namespace {

std::atomic<uint64_t> g_store_counter{0};

constexpr const char* kStorePrefix = "store-";
constexpr const char* kReserveName = "../.quota-reserve";  // beside the store's directory, at the tier's root
constexpr uint64_t kPage = 4096;

// Sets a tmpfs's size= through the new mount API: only `size` changes (shmem_reconfigure looks at
// the options it was given), and the mount's other flags stay as they are, which a mount(2)
// MS_REMOUNT would reset. tmpfs refuses a size below what it holds (EINVAL). 0 or errno.
// `root` must be the tmpfs's mount point (fspick refuses a path below it).
int ResizeTmpfs(const std::string& root, uint64_t bytes) {
  constexpr unsigned kFspickCloexec = 1;
  constexpr unsigned kSetString = 1, kCmdReconfigure = 7;
  int fc = static_cast<int>(syscall(SYS_fspick, AT_FDCWD, root.c_str(), kFspickCloexec));
  if (fc < 0) return errno;
  std::string value = std::to_string(bytes);
  int e = 0;
  if (syscall(SYS_fsconfig, fc, kSetString, "size", value.c_str(), 0) != 0 ||
      syscall(SYS_fsconfig, fc, kCmdReconfigure, nullptr, nullptr, 0) != 0)
    e = errno;
  close(fc);
  return e;
}

// Removes the files of directory `dirfd`/`name` and the directory itself (one level: a store holds
// only files).
void RemoveStoreDir(int parent, const char* name) {
  int fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    DIR* d = fdopendir(fd);
    if (d) {
      std::vector<std::string> names;
      while (dirent* e = readdir(d)) {
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) names.emplace_back(e->d_name);
      }
      for (auto& n : names) unlinkat(dirfd(d), n.c_str(), 0);
      closedir(d);  // closes fd
    } else {
      close(fd);
    }
  }
  unlinkat(parent, name, AT_REMOVEDIR);
}

// Whether a connection holder keeps this dead daemon's store for a successor: its `.held` lock
// file is locked (flock belongs to the open file, which the holder keeps open).
bool HeldForSuccessor(int rootfd, const char* name) {
  std::string path = std::string(name) + "/" + kHeldLockName;
  int fd = openat(rootfd, path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return false;
  bool held = flock(fd, LOCK_SH | LOCK_NB) != 0 && errno == EWOULDBLOCK;
  close(fd);  // drops our own lock, if we got one
  return held;
}

}  // namespace

BackingFd::~BackingFd() {
  if (fd >= 0) close(fd);
}

FileData::~FileData() {
  if (dirfd >= 0 && !name.empty()) unlinkat(dirfd, name.c_str(), 0);
}

int FileData::Open(int flags, FdRef* out) const {
  if (pinned) {
    *out = pinned;
    return 0;
  }
  if (dirfd < 0) return EBADF;  // a memfd is always pinned
  int fd = openat(dirfd, name.c_str(), flags | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return errno;
  *out = std::make_shared<BackingFd>(fd);
  return 0;
}

int FileData::Stat(struct stat* st) const {
  if (pinned) return fstat(pinned->fd, st) == 0 ? 0 : errno;
  if (dirfd < 0) return EBADF;
  return fstatat(dirfd, name.c_str(), st, AT_SYMLINK_NOFOLLOW) == 0 ? 0 : errno;
}

Store::Store(StoreOptions opts) : opts_(std::move(opts)) {
  name_ = !opts_.adopt_name.empty()
              ? opts_.adopt_name
              : std::string(kStorePrefix) + std::to_string(getpid()) + "-" + std::to_string(g_store_counter.fetch_add(1));
  if (!opts_.memory_dir.empty()) memory_error_ = Prepare(opts_.memory_dir, &memory_dirfd_);
  if (!opts_.spill_dir.empty()) disk_error_ = Prepare(opts_.spill_dir, &disk_dirfd_);
}

int Store::Prepare(const std::string& root, int* dirfd) {
  SweepDeadStores(root);
  int rootfd = open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (rootfd < 0) return errno;
  if (!opts_.adopt_name.empty()) {
    // A successor: the directory and its files are the dead daemon's, now ours (its lock is
    // held by the holder's fd, which the successor received).
    if (opts_.adopt_name.find('/') != std::string::npos) {
      close(rootfd);
      return EINVAL;
    }
    *dirfd = openat(rootfd, name_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int e = *dirfd < 0 ? errno : 0;
    close(rootfd);
    return e;
  }
  // A leftover of this very pid (a daemon killed and restarted under the same pid) holds nothing
  // anyone can reach: start empty.
  if (mkdirat(rootfd, name_.c_str(), 0700) != 0) {
    if (errno != EEXIST) {
      int e = errno;
      close(rootfd);
      return e;
    }
    RemoveStoreDir(rootfd, name_.c_str());
    if (mkdirat(rootfd, name_.c_str(), 0700) != 0) {
      int e = errno;
      close(rootfd);
      return e;
    }
  }
  *dirfd = openat(rootfd, name_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  int e = *dirfd < 0 ? errno : 0;
  close(rootfd);
  if (!e && opts_.lock) {
    int lfd = openat(*dirfd, kHeldLockName, O_CREAT | O_RDWR | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (lfd < 0 || flock(lfd, LOCK_EX | LOCK_NB) != 0) {
      e = errno;
      if (lfd >= 0) close(lfd);
    } else {
      lock_fds_.push_back(lfd);
    }
  }
  return e;
}

Store::~Store() { Release(); }

void Store::Release() {
  for (int fd : lock_fds_) close(fd);
  lock_fds_.clear();
  // Every FileData is gone by now (the inode table dies first, or Filesystem::ReleaseStore
  // emptied it): the directories are empty but for a file a reader still held. A disowned store
  // (a successor that failed to take over) leaves them to the next successor.
  auto drop = [this](int& fd, const std::string& root) {
    if (fd < 0) return;
    close(fd);
    fd = -1;
    if (disowned_) return;
    int rootfd = open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (rootfd < 0) return;
    RemoveStoreDir(rootfd, name_.c_str());
    close(rootfd);
  };
  if (reserve_fd_ >= 0) close(reserve_fd_), reserve_fd_ = -1;
  drop(memory_dirfd_, opts_.memory_dir);
  drop(disk_dirfd_, opts_.spill_dir);
}

int Store::init_error(std::string* what) const {
  if (memory_error_) {
    *what = "memory tier directory " + opts_.memory_dir;
    return memory_error_;
  }
  if (disk_error_) {
    *what = "disk tier directory " + opts_.spill_dir;
    return disk_error_;
  }
  return 0;
}

int Store::NewFile(Tier tier, uint64_t ino, uint64_t generation, std::shared_ptr<FileData>* out, FdRef* opened) {
  if (tier == Tier::kMemory && memory_dirfd_ < 0) {
    if (!opts_.memory_dir.empty()) return memory_error_ ? memory_error_ : EIO;
    int fd = memfd_create("ephemera", MFD_CLOEXEC);
    if (fd < 0) return errno;
    auto data = std::make_shared<FileData>(tier, -1, std::string());
    data->pinned = std::make_shared<BackingFd>(fd);
    *out = std::move(data);
    return 0;
  }
  int dirfd = tier == Tier::kMemory ? memory_dirfd_ : disk_dirfd_;
  if (dirfd < 0) return ENOSPC;  // no disk tier
  // The serial makes every name unique for the store's life: an old FileData that a reader still
  // holds unlinks its own name when it goes, never a newer file's.
  std::string name = std::to_string(ino) + "." + std::to_string(generation) + "." + std::to_string(serial_.fetch_add(1));
  int fd = openat(dirfd, name.c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return errno;
  if (opened) *opened = std::make_shared<BackingFd>(fd);
  else close(fd);  // a closed file costs no fd; the caller opens it when a handle needs it
  *out = std::make_shared<FileData>(tier, dirfd, std::move(name));
  return 0;
}

int Store::SetRoom(Tier tier, uint64_t room) {
  if (!tier_sized(tier)) return 0;
  if (tier == Tier::kMemory) {
    // A writer between the statvfs and the resize only makes the tmpfs hold more: try again.
    for (int attempt = 0;; attempt++) {
      struct statvfs sv;
      if (fstatvfs(memory_dirfd_, &sv) != 0) return errno;
      uint64_t held = static_cast<uint64_t>(sv.f_blocks - sv.f_bfree) * sv.f_frsize;
      uint64_t size = std::max<uint64_t>((held + room) / kPage * kPage, kPage);
      // Compared with the size in force, not one remembered: set-quotas resizes the tier too.
      if (size == static_cast<uint64_t>(sv.f_blocks) * sv.f_frsize) return 0;
      int e = ResizeTmpfs(opts_.memory_dir, size);
      if (e == 0) return 0;
      if (e != EINVAL || attempt >= 2) return e;
    }
  }
  // Kept open: sized at every admission point, a create-write-close-unlink costs two resizes.
  if (reserve_fd_ < 0) reserve_fd_ = openat(disk_dirfd_, kReserveName, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (reserve_fd_ < 0) return errno;
  const int fd = reserve_fd_;
  struct statvfs sv;
  struct stat st;
  int e = 0;
  if (fstatvfs(fd, &sv) != 0 || fstat(fd, &st) != 0) {
    e = errno;
  } else {
    const uint64_t block = sv.f_frsize ? sv.f_frsize : kPage;
    // Free space with the reserve counted as free; the reserve takes all of it but `room`.
    uint64_t reserve_now = static_cast<uint64_t>(st.st_blocks) * 512;
    uint64_t free_all = static_cast<uint64_t>(sv.f_bavail) * block + reserve_now;
    // Room in whole pages, as a tmpfs gives it (the image's ext4 may have 1 KiB blocks).
    room = room / kPage * kPage;
    uint64_t want = free_all > room ? (free_all - room + block - 1) / block * block : 0;
    if (want != static_cast<uint64_t>(st.st_size)) {
      if (want < static_cast<uint64_t>(st.st_size) || want < reserve_now) {
        if (ftruncate(fd, static_cast<off_t>(want)) != 0) e = errno;
      }
      if (e == 0 && want > 0 && fallocate(fd, 0, 0, static_cast<off_t>(want)) != 0) {
        // A writer took part of the room meanwhile: hold what is left, so nobody gets more.
        e = errno;
        struct statvfs again;
        if (e == ENOSPC && fstatvfs(fd, &again) == 0 && again.f_bavail > 0) {
          struct stat now;
          fstat(fd, &now);
          fallocate(fd, 0, 0, now.st_size + static_cast<off_t>(again.f_bavail * block));
        }
      }
    }
  }
  return e;
}

int Store::SyncDisk() const {
  if (disk_dirfd_ < 0) return 0;
  return syncfs(disk_dirfd_) == 0 ? 0 : errno;
}

int SweepDeadStores(const std::string& root) {
  int rootfd = open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (rootfd < 0) return 0;
  int dupfd = dup(rootfd);
  DIR* d = dupfd >= 0 ? fdopendir(dupfd) : nullptr;
  if (!d) {
    if (dupfd >= 0) close(dupfd);
    close(rootfd);
    return 0;
  }
  std::vector<std::string> dead;
  const size_t plen = strlen(kStorePrefix);
  while (dirent* e = readdir(d)) {
    if (strncmp(e->d_name, kStorePrefix, plen) != 0) continue;
    long pid = strtol(e->d_name + plen, nullptr, 10);
    if (pid <= 0 || pid == getpid()) continue;
    if (kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH && !HeldForSuccessor(rootfd, e->d_name))
      dead.emplace_back(e->d_name);
  }
  closedir(d);
  for (auto& n : dead) RemoveStoreDir(rootfd, n.c_str());
  close(rootfd);
  return static_cast<int>(dead.size());
}

}  // namespace ephemera
