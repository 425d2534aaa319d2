// The file system's frame: construction, Dispatch (the one place where bytes become requests; size
// checks come from the opcode table), the connection (INIT) and the figures the control plane reads.
// fs.h says where the rest of Filesystem lives.
#include "fs_internal.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysinfo.h>
#include <unistd.h>
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include "journal.h"

namespace ephemera {

int64_t NowMs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

Filesystem::Filesystem(FsOptions opts, StoreOptions store_opts)
    : opts_(std::move(opts)), store_(std::move(store_opts)) {
  slots_.resize(2);
  slot_generation_.resize(2, 0);
  // Tests only: widens the window between a RELEASE's reply and its closes (test/store/after-close).
  if (const char* v = getenv("EPHEMERA_TEST_RELEASE_DELAY_US")) release_close_delay_us_ = static_cast<unsigned>(atoi(v));
  auto root = std::make_unique<Inode>();
  root->ino = FUSE_ROOT_ID;
  root->generation = 0;
  root->mode = S_IFDIR | (opts_.root_mode & 07777);
  root->uid = opts_.root_uid;
  root->gid = opts_.root_gid;
  root->nlink = 2;
  root->atime = root->mtime = root->ctime = Now();
  root->nlookup = 1;  // the kernel holds the root for the mount's life
  root->dir = std::make_unique<Directory>();
  root->dir->parent = FUSE_ROOT_ID;
  slots_[FUSE_ROOT_ID] = std::move(root);
  live_inodes_ = 1;
  // tmpfs's defaults (mm/shmem.c): half of RAM, and half of RAM's pages for inodes.
  struct sysinfo si;
  uint64_t ram = sysinfo(&si) == 0 ? static_cast<uint64_t>(si.totalram) * si.mem_unit : (1ULL << 34);
  default_size_quota_ = ram / 2;
  default_inode_quota_ = ram / 4096 / 2;
  SizeTiers();
}

// The transport may be gone already, and the connection frees its backing ids when it closes:
// the inodes let go of theirs without a BACKING_CLOSE (as ReleaseStore does).
Filesystem::~Filesystem() { backing_ = nullptr; }

void Filesystem::Dispatch(const uint8_t* buf, size_t len, ReplySink* sink) {
  if (len < sizeof(fuse_in_header)) {
    counters_.malformed++;
    return;  // no unique to answer to; the kernel never sends this
  }
  const auto* h = reinterpret_cast<const fuse_in_header*>(buf);
  int idx = static_cast<int>(OpIndex::UNKNOWN);
  uint32_t arg_size = 0;
  ReplyShape shape = ShapeOf<Empty>();  // an unknown opcode is answered with an error alone
  switch (h->opcode) {
#define EPHEMERA_CASE(num, Name, Arg, Out) \
  case num:                                \
    idx = static_cast<int>(OpIndex::Name); \
    arg_size = ArgSize<Arg>();             \
    shape = ShapeOf<Out>();                \
    break;
    EPHEMERA_OPCODES(EPHEMERA_CASE)
#undef EPHEMERA_CASE
    default:
      break;
  }
  // SETXATTR without FUSE_SETXATTR_EXT carries the 8-byte compat header.
  if (h->opcode == FUSE_SETXATTR) arg_size = sizeof(SetxattrInCompat);
  counters_.count[idx]++;
  // Restartable: a resent request a dead daemon already applied gets its journaled reply again;
  // a changing request's records reach the journal before its reply (JournalSink).
  if (journal_ && (h->unique & kUniqueResend)) {
    if (JournalReplay(h->unique, sink)) return;
    if (!JournalAttempt(h->unique)) {
      counters_.errors[idx]++;
      Reply refused(sink, h->unique, shape, &counters_.unanswered, &counters_.bad_replies);
      if (shape.replies) refused.Error(EIO);
      else refused.NoReply();
      return;
    }
  }
  if (journal_) TestStopAt("read", h->opcode);
  JournalScope scope(journal_ ? this : nullptr, h->opcode);
  JournalSink journal_sink(scope.active() ? this : nullptr, sink, h->unique, h->opcode);
  if (scope.active()) sink = &journal_sink;
  Reply reply(sink, h->unique, shape, &counters_.unanswered, &counters_.bad_replies);
  if (h->len != len || len < sizeof(fuse_in_header) + arg_size) {
    counters_.malformed++;
    counters_.errors[idx]++;
    if (shape.replies) reply.Error(EINVAL);
    return;
  }
  if (idx == static_cast<int>(OpIndex::UNKNOWN)) {
    counters_.errors[idx]++;
    reply.Error(ENOSYS);
    return;
  }
  if (!initialized_ && h->opcode != FUSE_INIT) {
    counters_.errors[idx]++;
    reply.Error(EIO);  // the protocol forbids anything before INIT
    return;
  }
  const uint8_t* arg = buf + sizeof(fuse_in_header);
  Request req(h, arg, arg + arg_size, len - sizeof(fuse_in_header) - arg_size);
  try {
    switch (h->opcode) {
#define EPHEMERA_CALL(num, Name, Arg, Out) \
  case num:                                \
    Op##Name(req, reply);                  \
    break;
      EPHEMERA_OPCODES(EPHEMERA_CALL)
#undef EPHEMERA_CALL
    }
  } catch (const std::bad_alloc&) {
    counters_.exceptions++;
    reply.Error(ENOMEM);
  } catch (...) {
    // A C++ exception never reaches the kernel or Node: answer EIO and count it.
    counters_.exceptions++;
    reply.Error(EIO);
  }
  if (reply.error() != 0) counters_.errors[idx]++;
}

void Filesystem::SetInitState(const fuse_init_in& in, abi::InitOut* out) {
  memset(out, 0, sizeof(*out));
  out->major = abi::kKernelMajor;
  out->minor = std::min(in.minor, abi::kOurMinor);
  proto_minor_ = out->minor;
  uint64_t kflags = in.flags;
  if (kflags & abi::kInitExt) kflags |= static_cast<uint64_t>(in.flags2) << 32;

  uint64_t want = FUSE_ASYNC_READ | FUSE_BIG_WRITES | FUSE_ATOMIC_O_TRUNC | FUSE_DO_READDIRPLUS |
                  FUSE_PARALLEL_DIROPS | FUSE_MAX_PAGES | FUSE_CACHE_SYMLINKS | abi::kInitExt |
                  FUSE_ASYNC_DIO;
  // One connection-level choice: passthrough where the kernel offers it and we may register
  // backing files; else the writeback cache. The kernel refuses the two together.
  bool may_passthrough = backing_ != nullptr && opts_.mode != "writeback" && opts_.mode != "none";
  if (may_passthrough && (kflags & abi::kPassthrough)) {
    want |= abi::kPassthrough;
    out->max_stack_depth = 1;  // backing files live on tmpfs/ext4 (depth 0)
    passthrough_ = true;
  } else if (opts_.mode != "none" && (kflags & FUSE_WRITEBACK_CACHE)) {
    want |= FUSE_WRITEBACK_CACHE;
    writeback_ = true;
  }
  if (want_uring_ && (kflags & kInitOverIoUring)) want |= kInitOverIoUring;
  // The kernel then leaves clearing setuid/setgid to us (KillSuidGid) and sets SB_NOSEC, so a
  // passthrough write to a file without those bits returns from file_remove_privs at once (S_NOSEC)
  // instead of re-checking the mode and security.capability on every write.
  if (opts_.killpriv_v2) want |= FUSE_HANDLE_KILLPRIV_V2;
  uint64_t flags = want & kflags;
  uring_ = (flags & kInitOverIoUring) != 0;
  killpriv_v2_ = (flags & FUSE_HANDLE_KILLPRIV_V2) != 0;
  // Offered by the kernel, not negotiated: an ENOSYS to OPENDIR then means "no OPENDIR or
  // RELEASEDIR ever again" (fs/fuse/file.c, fc->no_opendir). Directory handles hold no state
  // here (READDIR reads the nodeid), so each listing saves two round trips. FUSE_NO_OPEN_SUPPORT
  // is not taken: passthrough needs OPEN's reply (FOPEN_PASSTHROUGH and the backing id), and
  // OPEN is where a file is admitted to a tier.
  no_opendir_ = (kflags & FUSE_NO_OPENDIR_SUPPORT) != 0;
  out->flags = static_cast<uint32_t>(flags);
  out->flags2 = static_cast<uint32_t>(flags >> 32);
  out->max_readahead = in.max_readahead;
  out->max_background = 64;
  out->congestion_threshold = 48;
  out->max_write = opts_.max_write;
  out->max_pages = static_cast<uint16_t>(opts_.max_write / 4096);
  out->time_gran = 1;
}

void Filesystem::OpINIT(const Request& req, Reply& reply) {
  const auto& in = req.In<fuse_init_in>();
  if (in.major != abi::kKernelMajor) {
    // A newer major: answer with ours; the kernel retries with ours or gives up.
    abi::InitOut out{};
    out.major = abi::kKernelMajor;
    out.minor = abi::kOurMinor;
    reply.Bytes(&out, sizeof(out));
    return;
  }
  if (in.minor < 31) {  // 7.31 (Linux 5.x) is the oldest we support
    reply.Error(EPROTO);
    return;
  }
  abi::InitOut out;
  SetInitState(in, &out);
  if (journal_) JournalInit(in.flags & abi::kInitExt ? in.flags | static_cast<uint64_t>(in.flags2) << 32 : in.flags,
                            out.flags | static_cast<uint64_t>(out.flags2) << 32);
  initialized_ = true;
  reply.Ok(out);
  if (on_init_) on_init_();
}

void Filesystem::OpDESTROY(const Request&, Reply& reply) { reply.Ok(); }

void Filesystem::OpINTERRUPT(const Request&, Reply& reply) {
  // Every handler finishes in microseconds (no request waits on another), so there is nothing
  // to interrupt: the original request's reply follows shortly.
  reply.NoReply();
}

std::vector<InodeStat> Filesystem::InodeStats() {
  // No syscall per closed file: a closed file changes only through requests we see, and its
  // figures are kept at every close, truncate and move. Open files are read through their fd.
  std::lock_guard lock(mu_);
  std::vector<InodeStat> out;
  out.reserve(live_inodes_);
  for (auto& s : slots_) {
    if (!s || !s->data) continue;
    uint64_t size = s->data->size, allocated = s->accounted_bytes;
    if (s->open_count > 0 && s->data->pinned) {
      struct stat st{};
      if (fstat(s->data->pinned->fd, &st) == 0) size = st.st_size, allocated = static_cast<uint64_t>(st.st_blocks) * 512;
    }
    out.push_back({s->ino, s->generation, s->data->tier, size, allocated, s->open_count, s->last_open_ms,
                   s->last_close_ms, s->last_move_ms});
  }
  return out;
}

Filesystem::Usage Filesystem::GetUsage() {
  std::lock_guard lock(mu_);
  Usage u;
  u.inodes = live_inodes_;
  u.links = extra_links_;
  u.name_bytes = meta_bytes_;
  u.size_quota = SizeQuota();
  u.inode_quota = InodeQuota();
  for (auto& s : slots_) {
    if (!s || !s->data) continue;
    u.files++;
    (s->data->tier == Tier::kMemory ? u.files_memory : u.files_disk)++;
  }
  for (Inode* in : open_files_) {
    if (!in->data) continue;
    u.open_files++;
    (in->data->tier == Tier::kMemory ? u.open_memory : u.open_disk)++;
  }
  LiveTierBytes(&u.bytes_memory, &u.bytes_disk);
  u.moves_refused_mapped = moves_refused_mapped_.load();
  u.demoted_at_open = demoted_at_open_.load();
  u.admitted_unmovable = admitted_unmovable_.load();
  u.moves_unverified = moves_unverified_.load();
  u.fallocate_timeouts = fallocate_timeouts_.load();
  return u;
}

}  // namespace ephemera
