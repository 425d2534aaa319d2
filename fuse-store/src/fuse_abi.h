// Kernel FUSE ABI. Debian's <linux/fuse.h> is protocol 7.38; the kernel here speaks 7.45, and
// passthrough (7.40) needs a few definitions the old header lacks. They are added below from the
// kernel's include/uapi/linux/fuse.h, with static_asserts pinning every layout we rely on.
#pragma once
#include <linux/fuse.h>
#include <sys/ioctl.h>
#include <cstddef>
#include <cstdint>

namespace ephemera::abi {

// Init flags carried in the upper word (flags2) once FUSE_INIT_EXT is negotiated.
constexpr uint64_t kInitExt = 1ULL << 30;
constexpr uint64_t kPassthrough = 1ULL << 37;
constexpr uint64_t kNoExportSupport = 1ULL << 38;
constexpr uint32_t kFopenPassthrough = 1u << 7;
constexpr uint32_t kFopenNoflush = 1u << 5;

// struct fuse_init_out as of 7.45: max_stack_depth replaced the first unused word of 7.38.
struct InitOut {
  uint32_t major;
  uint32_t minor;
  uint32_t max_readahead;
  uint32_t flags;
  uint16_t max_background;
  uint16_t congestion_threshold;
  uint32_t max_write;
  uint32_t time_gran;
  uint16_t max_pages;
  uint16_t map_alignment;
  uint32_t flags2;
  uint32_t max_stack_depth;
  uint16_t request_timeout;
  uint16_t unused[11];
};
static_assert(sizeof(InitOut) == 64);
static_assert(offsetof(InitOut, max_stack_depth) == 36);

// struct fuse_open_out as of 7.40: the old padding word is the passthrough backing id.
struct OpenOut {
  uint64_t fh;
  uint32_t open_flags;
  int32_t backing_id;
};
static_assert(sizeof(OpenOut) == sizeof(fuse_open_out));

struct BackingMap {
  int32_t fd;
  uint32_t flags;
  uint64_t padding;
};
static_assert(sizeof(BackingMap) == 16);

constexpr unsigned long kDevIocClone = _IOR(229, 0, uint32_t);
constexpr unsigned long kDevIocBackingOpen = _IOW(229, 1, BackingMap);
constexpr unsigned long kDevIocBackingClose = _IOW(229, 2, uint32_t);

static_assert(sizeof(fuse_in_header) == 40);
static_assert(sizeof(fuse_out_header) == 16);
static_assert(sizeof(fuse_attr) == 88);
static_assert(sizeof(fuse_entry_out) == 128);
static_assert(sizeof(fuse_attr_out) == 104);
static_assert(sizeof(fuse_setattr_in) == 88);
static_assert(sizeof(fuse_write_in) == 40);
static_assert(sizeof(fuse_read_in) == 40);
static_assert(sizeof(fuse_init_in) == 64);
static_assert(sizeof(fuse_copy_file_range_in) == 56);

constexpr uint32_t kKernelMajor = 7;
// We speak 7.45 (the kernel's); older kernels get their own minor back and lose passthrough.
constexpr uint32_t kOurMinor = 45;

}  // namespace ephemera::abi
