// Shared by the sources of Filesystem only (fs.cc, inode_table.cc, ops_*.cc, admission.cc,
// tiers.cc, charge.cc): limits, time helpers and the two functions one file defines and another
// calls. The helpers are inline, so splitting the handlers over files added no call to a request.
#pragma once
#include <atomic>
#include <cstdint>
#include <ctime>
#include "fs.h"

namespace ephemera {

constexpr uint32_t kRenameNoReplace = 1;  // RENAME_NOREPLACE
constexpr uint32_t kRenameExchange = 2;   // RENAME_EXCHANGE
constexpr uint32_t kRenameWhiteout = 4;   // RENAME_WHITEOUT
constexpr size_t kMaxName = 255;
constexpr size_t kMaxXattrValue = 64 * 1024;
constexpr size_t kMaxSymlink = 4095;

inline timespec Now() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return ts;
}

inline void SplitTimeout(double s, uint64_t* sec, uint32_t* nsec) {
  *sec = static_cast<uint64_t>(s);
  *nsec = static_cast<uint32_t>((s - static_cast<double>(*sec)) * 1e9);
}

inline bool Later(const timespec& a, const timespec& b) {
  return a.tv_sec > b.tv_sec || (a.tv_sec == b.tv_sec && a.tv_nsec > b.tv_nsec);
}

inline uint32_t DirentType(uint32_t mode) { return (mode & S_IFMT) >> 12; }

// The compat setxattr body (FUSE_SETXATTR_EXT is not negotiated): size and flags only.
struct SetxattrInCompat {
  uint32_t size;
  uint32_t flags;
};

// tiers.cc: copies src → dst segment by segment (SEEK_DATA/SEEK_HOLE), so sparse files stay
// sparse. 0 or errno.
int CopyData(int src, int dst, uint64_t size);

// charge.cc: an allocating fallocate of `fd` run by the charge agent's helper inside its cgroup.
// 0, the errno fallocate failed with (> 0), or -1 when the helper could not run or join the cgroup.
int ChargedFallocate(const Filesystem::ChargeAgent& agent, int fd, uint32_t mode, uint64_t offset, uint64_t length,
                     std::atomic<uint64_t>* timeouts);

}  // namespace ephemera
