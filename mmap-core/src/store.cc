#include "store.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>
#include <cerrno>
#include <string>

namespace ephemera {

FileData::~FileData() {
  if (fd >= 0) close(fd);
}

int Store::NewFile(Tier tier, uint64_t ino) const {
  if (tier == Tier::kMemory) {
    if (!opts_.memory_dir.empty()) {
      int fd = open(opts_.memory_dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
      if (fd >= 0) return fd;
      if (errno != EOPNOTSUPP && errno != EISDIR) return -errno;
    }
    int fd = memfd_create("ephemera", MFD_CLOEXEC);
    return fd >= 0 ? fd : -errno;
  }
  if (opts_.spill_dir.empty()) return -ENOSPC;
  // Spill files are named by inode number, never by user path; O_TMPFILE keeps even that name
  // out of the directory while the file lives (a crash leaves nothing behind to clean).
  int fd = open(opts_.spill_dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  if (fd >= 0) return fd;
  if (errno != EOPNOTSUPP) return -errno;
  std::string path = opts_.spill_dir + "/" + std::to_string(ino) + ".spill";
  fd = open(path.c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0) return -errno;
  unlink(path.c_str());
  return fd;
}

}  // namespace ephemera
