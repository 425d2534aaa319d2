// The one opcode table. Dispatch, request size checks, debug names and the per-opcode counters
// all derive from it, so a missing or mis-sized row is a compile error, not a run-time surprise;
// its reply column is what Reply holds every successful answer to.
#pragma once
#include "fuse_abi.h"

namespace ephemera {

struct NoArg {};

// Reply layouts that are not one struct.
struct NoReply {};  // the protocol has no answer (FORGET, BATCH_FORGET, INTERRUPT)
struct Empty {};    // the header alone
struct Data {};     // a payload of its own length (file data, names, dirents, xattr values or sizes)
struct CreateOut {  // CREATE answers an entry and an open in one reply
  fuse_entry_out entry;
  abi::OpenOut open;
};
static_assert(sizeof(CreateOut) == sizeof(fuse_entry_out) + sizeof(abi::OpenOut), "CREATE's reply has no padding");

// X(opcode number, Name, fixed request struct, reply layout)
// `Name` is both the counter name and the Filesystem method `Op##Name`. A successful reply must
// carry exactly the layout's bytes (Data: any); Reply checks it (ReplyShape below).
#define EPHEMERA_OPCODES(X)                                         \
  X(FUSE_LOOKUP, LOOKUP, NoArg, fuse_entry_out)                           \
  X(FUSE_FORGET, FORGET, fuse_forget_in, NoReply)                         \
  X(FUSE_GETATTR, GETATTR, fuse_getattr_in, fuse_attr_out)                \
  X(FUSE_SETATTR, SETATTR, fuse_setattr_in, fuse_attr_out)                \
  X(FUSE_READLINK, READLINK, NoArg, Data)                                 \
  X(FUSE_SYMLINK, SYMLINK, NoArg, fuse_entry_out)                         \
  X(FUSE_MKNOD, MKNOD, fuse_mknod_in, fuse_entry_out)                     \
  X(FUSE_MKDIR, MKDIR, fuse_mkdir_in, fuse_entry_out)                     \
  X(FUSE_UNLINK, UNLINK, NoArg, Empty)                                    \
  X(FUSE_RMDIR, RMDIR, NoArg, Empty)                                      \
  X(FUSE_RENAME, RENAME, fuse_rename_in, Empty)                           \
  X(FUSE_LINK, LINK, fuse_link_in, fuse_entry_out)                        \
  X(FUSE_OPEN, OPEN, fuse_open_in, abi::OpenOut)                          \
  X(FUSE_READ, READ, fuse_read_in, Data)                                  \
  X(FUSE_WRITE, WRITE, fuse_write_in, fuse_write_out)                     \
  X(FUSE_STATFS, STATFS, NoArg, fuse_statfs_out)                          \
  X(FUSE_RELEASE, RELEASE, fuse_release_in, Empty)                        \
  X(FUSE_FSYNC, FSYNC, fuse_fsync_in, Empty)                              \
  X(FUSE_SETXATTR, SETXATTR, fuse_setxattr_in, Empty)                     \
  X(FUSE_GETXATTR, GETXATTR, fuse_getxattr_in, Data)                      \
  X(FUSE_LISTXATTR, LISTXATTR, fuse_getxattr_in, Data)                    \
  X(FUSE_REMOVEXATTR, REMOVEXATTR, NoArg, Empty)                          \
  X(FUSE_FLUSH, FLUSH, fuse_flush_in, Empty)                              \
  X(FUSE_INIT, INIT, fuse_init_in, abi::InitOut)                          \
  X(FUSE_OPENDIR, OPENDIR, fuse_open_in, abi::OpenOut)                    \
  X(FUSE_READDIR, READDIR, fuse_read_in, Data)                            \
  X(FUSE_RELEASEDIR, RELEASEDIR, fuse_release_in, Empty)                  \
  X(FUSE_FSYNCDIR, FSYNCDIR, fuse_fsync_in, Empty)                        \
  X(FUSE_ACCESS, ACCESS, fuse_access_in, Empty)                           \
  X(FUSE_CREATE, CREATE, fuse_create_in, CreateOut)                       \
  X(FUSE_INTERRUPT, INTERRUPT, fuse_interrupt_in, NoReply)                \
  X(FUSE_DESTROY, DESTROY, NoArg, Empty)                                  \
  X(FUSE_BATCH_FORGET, BATCH_FORGET, fuse_batch_forget_in, NoReply)       \
  X(FUSE_FALLOCATE, FALLOCATE, fuse_fallocate_in, Empty)                  \
  X(FUSE_READDIRPLUS, READDIRPLUS, fuse_read_in, Data)                    \
  X(FUSE_RENAME2, RENAME2, fuse_rename2_in, Empty)                        \
  X(FUSE_LSEEK, LSEEK, fuse_lseek_in, fuse_lseek_out)                     \
  X(FUSE_COPY_FILE_RANGE, COPY_FILE_RANGE, fuse_copy_file_range_in, fuse_write_out)\
  X(FUSE_SYNCFS, SYNCFS, fuse_syncfs_in, Empty)

template <typename T>
constexpr uint32_t ArgSize() { return sizeof(T); }
template <>
constexpr uint32_t ArgSize<NoArg>() { return 0; }

// What a successful reply of an opcode must carry, derived from its layout column.
struct ReplyShape {
  bool replies;     // false: the protocol has no answer
  bool any_size;    // Data: the payload is as long as it is
  uint32_t size;    // otherwise: exactly this many bytes after the header
};
template <typename T>
constexpr ReplyShape ShapeOf() { return {true, false, static_cast<uint32_t>(sizeof(T))}; }
template <>
constexpr ReplyShape ShapeOf<NoReply>() { return {false, false, 0}; }
template <>
constexpr ReplyShape ShapeOf<Empty>() { return {true, false, 0}; }
template <>
constexpr ReplyShape ShapeOf<Data>() { return {true, true, 0}; }

// Dense counter index per opcode, plus slots for requests that never reach a handler.
enum class OpIndex : int {
#define EPHEMERA_OP_ENUM(num, Name, Arg, Out) Name,
  EPHEMERA_OPCODES(EPHEMERA_OP_ENUM)
#undef EPHEMERA_OP_ENUM
  UNKNOWN,
  COUNT
};
constexpr int kOpCount = static_cast<int>(OpIndex::COUNT);

inline const char* OpName(int idx) {
  static const char* const names[] = {
#define EPHEMERA_OP_NAME(num, Name, Arg, Out) #Name,
      EPHEMERA_OPCODES(EPHEMERA_OP_NAME)
#undef EPHEMERA_OP_NAME
      "UNKNOWN"};
  return idx >= 0 && idx < kOpCount ? names[idx] : "?";
}

}  // namespace ephemera
