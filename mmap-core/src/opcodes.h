// The one opcode table. Dispatch, request size checks, debug names and the per-opcode counters
// all derive from it, so a missing or mis-sized row is a compile error, not a run-time surprise.
#pragma once
#include "fuse_abi.h"

namespace ephemera {

struct NoArg {};

// X(opcode number, Name, fixed request struct, replies?)
// `Name` is both the counter name and the Filesystem method `Op##Name`.
#define EPHEMERA_OPCODES(X)                                         \
  X(FUSE_LOOKUP, LOOKUP, NoArg, true)                               \
  X(FUSE_FORGET, FORGET, fuse_forget_in, false)                     \
  X(FUSE_GETATTR, GETATTR, fuse_getattr_in, true)                   \
  X(FUSE_SETATTR, SETATTR, fuse_setattr_in, true)                   \
  X(FUSE_READLINK, READLINK, NoArg, true)                           \
  X(FUSE_SYMLINK, SYMLINK, NoArg, true)                             \
  X(FUSE_MKNOD, MKNOD, fuse_mknod_in, true)                         \
  X(FUSE_MKDIR, MKDIR, fuse_mkdir_in, true)                         \
  X(FUSE_UNLINK, UNLINK, NoArg, true)                               \
  X(FUSE_RMDIR, RMDIR, NoArg, true)                                 \
  X(FUSE_RENAME, RENAME, fuse_rename_in, true)                      \
  X(FUSE_LINK, LINK, fuse_link_in, true)                            \
  X(FUSE_OPEN, OPEN, fuse_open_in, true)                            \
  X(FUSE_READ, READ, fuse_read_in, true)                            \
  X(FUSE_WRITE, WRITE, fuse_write_in, true)                         \
  X(FUSE_STATFS, STATFS, NoArg, true)                               \
  X(FUSE_RELEASE, RELEASE, fuse_release_in, true)                   \
  X(FUSE_FSYNC, FSYNC, fuse_fsync_in, true)                         \
  X(FUSE_SETXATTR, SETXATTR, fuse_setxattr_in, true)                \
  X(FUSE_GETXATTR, GETXATTR, fuse_getxattr_in, true)                \
  X(FUSE_LISTXATTR, LISTXATTR, fuse_getxattr_in, true)              \
  X(FUSE_REMOVEXATTR, REMOVEXATTR, NoArg, true)                     \
  X(FUSE_FLUSH, FLUSH, fuse_flush_in, true)                         \
  X(FUSE_INIT, INIT, fuse_init_in, true)                            \
  X(FUSE_OPENDIR, OPENDIR, fuse_open_in, true)                      \
  X(FUSE_READDIR, READDIR, fuse_read_in, true)                      \
  X(FUSE_RELEASEDIR, RELEASEDIR, fuse_release_in, true)             \
  X(FUSE_FSYNCDIR, FSYNCDIR, fuse_fsync_in, true)                   \
  X(FUSE_ACCESS, ACCESS, fuse_access_in, true)                      \
  X(FUSE_CREATE, CREATE, fuse_create_in, true)                      \
  X(FUSE_INTERRUPT, INTERRUPT, fuse_interrupt_in, false)            \
  X(FUSE_DESTROY, DESTROY, NoArg, true)                             \
  X(FUSE_BATCH_FORGET, BATCH_FORGET, fuse_batch_forget_in, false)   \
  X(FUSE_FALLOCATE, FALLOCATE, fuse_fallocate_in, true)             \
  X(FUSE_READDIRPLUS, READDIRPLUS, fuse_read_in, true)              \
  X(FUSE_RENAME2, RENAME2, fuse_rename2_in, true)                   \
  X(FUSE_LSEEK, LSEEK, fuse_lseek_in, true)                         \
  X(FUSE_COPY_FILE_RANGE, COPY_FILE_RANGE, fuse_copy_file_range_in, true) \
  X(FUSE_SYNCFS, SYNCFS, fuse_syncfs_in, true)

template <typename T>
constexpr uint32_t ArgSize() { return sizeof(T); }
template <>
constexpr uint32_t ArgSize<NoArg>() { return 0; }

// Dense counter index per opcode, plus slots for requests that never reach a handler.
enum class OpIndex : int {
#define EPHEMERA_OP_ENUM(num, Name, Arg, replies) Name,
  EPHEMERA_OPCODES(EPHEMERA_OP_ENUM)
#undef EPHEMERA_OP_ENUM
  UNKNOWN,
  COUNT
};
constexpr int kOpCount = static_cast<int>(OpIndex::COUNT);

inline const char* OpName(int idx) {
  static const char* const names[] = {
#define EPHEMERA_OP_NAME(num, Name, Arg, replies) #Name,
      EPHEMERA_OPCODES(EPHEMERA_OP_NAME)
#undef EPHEMERA_OP_NAME
      "UNKNOWN"};
  return idx >= 0 && idx < kOpCount ? names[idx] : "?";
}

}  // namespace ephemera
