#include "fs.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <spawn.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/sysinfo.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>
#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <ctime>
#include "errno_names.h"
#include "journal.h"

namespace ephemera {
namespace {

constexpr uint32_t kRenameNoReplace = 1;  // RENAME_NOREPLACE
constexpr uint32_t kRenameExchange = 2;   // RENAME_EXCHANGE
constexpr uint32_t kRenameWhiteout = 4;   // RENAME_WHITEOUT
constexpr size_t kMaxName = 255;
constexpr size_t kMaxXattrValue = 64 * 1024;
constexpr size_t kMaxSymlink = 4095;

timespec Now() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return ts;
}

void SplitTimeout(double s, uint64_t* sec, uint32_t* nsec) {
  *sec = static_cast<uint64_t>(s);
  *nsec = static_cast<uint32_t>((s - static_cast<double>(*sec)) * 1e9);
}

bool Later(const timespec& a, const timespec& b) {
  return a.tv_sec > b.tv_sec || (a.tv_sec == b.tv_sec && a.tv_nsec > b.tv_nsec);
}

uint32_t DirentType(uint32_t mode) { return (mode & S_IFMT) >> 12; }

// The compat setxattr body (FUSE_SETXATTR_EXT is not negotiated): size and flags only.
struct SetxattrInCompat {
  uint32_t size;
  uint32_t flags;
};

}  // namespace

int64_t NowMs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

uint64_t Directory::Find(const std::string& name) const {
  auto it = cookie_of.find(name);
  if (it == cookie_of.end()) return 0;
  return by_cookie.at(it->second).ino;
}
void Directory::Insert(const std::string& name, uint64_t ino) {
  uint64_t c = next_cookie++;
  by_cookie.emplace(c, Entry{name, ino});
  cookie_of[name] = c;
}
void Directory::Erase(const std::string& name) {
  auto it = cookie_of.find(name);
  if (it == cookie_of.end()) return;
  by_cookie.erase(it->second);
  cookie_of.erase(it);
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

uint64_t Filesystem::SizeQuota() const { return opts_.size_quota ? opts_.size_quota : default_size_quota_; }
uint64_t Filesystem::InodeQuota() const { return opts_.inode_quota ? opts_.inode_quota : default_inode_quota_; }

// The transport may be gone already, and the connection frees its backing ids when it closes:
// the inodes let go of theirs without a BACKING_CLOSE (as ReleaseStore does).
Filesystem::~Filesystem() { backing_ = nullptr; }

// ---------------------------------------------------------------------------------------------
// Dispatch: the one place where bytes become requests. Size checks come from the opcode table.

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

// ---------------------------------------------------------------------------------------------
// Inode table

Inode* Filesystem::Get(uint64_t ino) {
  if (ino == 0 || ino >= slots_.size()) return nullptr;
  Inode* in = slots_[ino].get();
  if (in && journal_) JournalMark(ino);
  return in;
}

int Filesystem::ReserveInode() const {
  if (live_inodes_ + extra_links_ >= InodeQuota()) return ENOSPC;
  return 0;
}

int Filesystem::ReserveMeta(uint64_t bytes) {
  if (BytesUsed() + bytes > SizeQuota()) return ENOSPC;
  return 0;
}

void Filesystem::AddEntry(Inode* dir, const std::string& name, uint64_t ino) {
  dir->dir->Insert(name, ino);
  meta_bytes_ += name.size();
  if (journal_) JournalDirent(true, dir->ino, dir->dir->next_cookie - 1, ino, name);
}

void Filesystem::RemoveEntry(Inode* dir, const std::string& name) {
  if (!dir->dir->cookie_of.count(name)) return;
  dir->dir->Erase(name);
  if (journal_) JournalDirent(false, dir->ino, 0, 0, name);
  meta_bytes_ -= std::min<uint64_t>(meta_bytes_, name.size());
}

Inode* Filesystem::NewInode(uint32_t mode, uint32_t uid, uint32_t gid) {
  uint64_t ino;
  if (!free_slots_.empty()) {
    ino = free_slots_.back();
    free_slots_.pop_back();
  } else {
    ino = slots_.size();
    slots_.emplace_back();
    slot_generation_.push_back(0);
  }
  auto in = std::make_unique<Inode>();
  in->ino = ino;
  in->generation = ++slot_generation_[ino];  // nodeid:generation is unique for the fs's life
  in->mode = mode;
  in->uid = uid;
  in->gid = gid;
  in->atime = in->mtime = in->ctime = Now();
  Inode* raw = in.get();
  slots_[ino] = std::move(in);
  live_inodes_++;
  if (journal_) JournalMark(ino);
  return raw;
}

void Filesystem::MaybeFree(Inode* in) {
  if (in->ino == FUSE_ROOT_ID) return;
  if (in->nlink == 0 && in->open_count == 0 && in->data) {
    // No name and no open handle: nothing can reach the data any more, but the kernel's FORGET
    // comes later and asynchronously. Free the memory now, as tmpfs does on unlink.
    in->backing.reset();
    Unaccount(in);
    in->data.reset();
    SizeTiers();  // the other tier gets the room back
  }
  if (in->nlink > 0 || in->nlookup > 0 || in->open_count > 0) return;
  in->backing.reset();
  Unaccount(in);
  uint64_t held = in->link.size();
  for (auto& [k, v] : in->xattrs) held += k.size() + v.size();
  meta_bytes_ -= std::min(meta_bytes_, held);
  uint64_t ino = in->ino;
  slots_[ino].reset();  // closes the backing fd: the memory goes back at once
  free_slots_.push_back(ino);
  live_inodes_--;
}

void Filesystem::FillAttr(Inode* in, fuse_attr* a) {
  memset(a, 0, sizeof(*a));
  a->ino = in->ino;
  a->mode = in->mode;
  a->nlink = in->nlink;
  a->uid = in->uid;
  a->gid = in->gid;
  a->rdev = in->rdev;
  a->blksize = 4096;
  timespec atime = in->atime, mtime = in->mtime, ctime = in->ctime;
  if (in->data) {
    struct stat st;
    if (in->data->Stat(&st) == 0) {
      a->size = st.st_size;
      a->blocks = st.st_blocks;
      // Under passthrough the kernel writes the backing file, so its times are the truth.
      atime = st.st_atim;
      mtime = st.st_mtim;
      bool data_changed = st.st_ctim.tv_sec != in->data_ctime_base.tv_sec || st.st_ctim.tv_nsec != in->data_ctime_base.tv_nsec;
      if (data_changed && Later(st.st_ctim, ctime)) ctime = st.st_ctim;
    }
  } else if (in->is_dir()) {
    a->size = 4096;
    a->blocks = 8;
  } else if (S_ISLNK(in->mode)) {
    a->size = in->link.size();
  }
  a->atime = atime.tv_sec;
  a->atimensec = atime.tv_nsec;
  a->mtime = mtime.tv_sec;
  a->mtimensec = mtime.tv_nsec;
  a->ctime = ctime.tv_sec;
  a->ctimensec = ctime.tv_nsec;
}

void Filesystem::FillEntry(Inode* in, fuse_entry_out* out) {
  memset(out, 0, sizeof(*out));
  out->nodeid = in->ino;
  out->generation = in->generation;
  SplitTimeout(opts_.entry_timeout_s, &out->entry_valid, &out->entry_valid_nsec);
  SplitTimeout(opts_.attr_timeout_s, &out->attr_valid, &out->attr_valid_nsec);
  FillAttr(in, &out->attr);
}

void Filesystem::ReplyEntry(Inode* in, Reply& reply) {
  fuse_entry_out out;
  FillEntry(in, &out);
  in->nlookup++;
  reply.Ok(out);
}

int Filesystem::CheckName(std::string_view name) const {
  if (name.empty() || name == "." || name == "..") return EINVAL;
  if (name.size() > kMaxName) return ENAMETOOLONG;
  if (name.find('/') != std::string_view::npos) return EINVAL;
  return 0;
}

uint64_t Filesystem::BytesUsed() {
  uint64_t memory = 0, disk = 0;
  LiveTierBytes(&memory, &disk);
  return memory + disk + meta_bytes_;
}

void Filesystem::LiveTierBytes(uint64_t* memory, uint64_t* disk) {
  *memory = mem_bytes_.load();
  *disk = disk_bytes_.load();
  for (Inode* in : open_files_) {
    if (!in->data) continue;
    struct stat st;
    if (in->data->Stat(&st) != 0) continue;
    uint64_t& total = in->data->tier == Tier::kMemory ? *memory : *disk;
    total = total - std::min(total, in->accounted_bytes) + static_cast<uint64_t>(st.st_blocks) * 512;
  }
}

void Filesystem::SizeTiers() {
  if (!store_.tier_sized(Tier::kMemory) && !store_.tier_sized(Tier::kDisk)) return;
  uint64_t memory = 0, disk = 0;
  LiveTierBytes(&memory, &disk);
  const uint64_t used = memory + disk + meta_bytes_, quota = SizeQuota();
  const uint64_t room = quota > used ? quota - used : 0;
  // A move's copy is not yet any inode's bytes: its target tier gets the room for the rest of it.
  // (A writer on that tier racing the copy can take that room; the copy then fails ENOSPC and the
  // move is abandoned, the writer having passed the quota by at most the moving file's size.)
  uint64_t copying[2] = {inline_copy_[0], inline_copy_[1]};
  for (auto& [token, mv] : moves_) {
    struct stat src{}, dst{};
    if (!mv.src || !mv.dst || fstat(mv.src->fd, &src) != 0 || fstat(mv.dst->fd, &dst) != 0) continue;
    uint64_t need = static_cast<uint64_t>(src.st_blocks) * 512, have = static_cast<uint64_t>(dst.st_blocks) * 512;
    copying[static_cast<int>(mv.target->tier)] += need > have ? need - have : 0;
  }
  store_.SetRoom(Tier::kMemory, room + copying[0]);
  store_.SetRoom(Tier::kDisk, room + copying[1]);
}

bool Filesystem::NewFileFitsInMemory() {
  const uint64_t budget = placement_.new_file_room;
  const uint64_t reserve = placement_.reserve_per_open_file;
  uint64_t committed = mem_bytes_.load();
  if (reserve == 0) return committed < budget;
  // Open memory-tier files may still grow (under passthrough we do not see their writes), and an
  // open file's pages cannot be spilled: each counts at its hint on top of what the tier holds.
  // Over-counting their bytes so far is the safe side; two files growing to the hint at once in
  // a budget that holds one was an OOM kill (bench impact, 2 × 128 MiB at 150 MiB).
  for (Inode* in : open_files_) {
    if (in->data && in->data->tier == Tier::kMemory) committed += reserve;
  }
  return committed + reserve <= budget;
}

bool Filesystem::ReopenFitsInMemory(Inode* in, uint64_t size) {
  // The rule for a new file, with this file's own bytes set aside: from what it holds it may grow
  // by the hint again (a log reopened for appending grows past any hint: counting it at only
  // max(hint, size) let a 4 MiB-hinted log grow in memory to an OOM kill), beside every other open
  // memory-tier file at the hint.
  const uint64_t budget = placement_.new_file_room;
  if (budget == UINT64_MAX) return true;
  const uint64_t reserve = placement_.reserve_per_open_file;
  uint64_t committed = mem_bytes_.load();
  committed -= std::min(committed, in->accounted_bytes);
  for (Inode* other : open_files_) {
    if (other != in && other->data && other->data->tier == Tier::kMemory) committed += reserve;
  }
  if (reserve == 0) return committed + size < budget;
  return committed + size + reserve <= budget;
}

// ---------------------------------------------------------------------------------------------
// Connection

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

// ---------------------------------------------------------------------------------------------
// Names

void Filesystem::OpLOOKUP(const Request& req, Reply& reply) {
  std::string_view name;
  if (!req.String(0, &name)) return reply.Error(EINVAL);
  if (name.size() > kMaxName) return reply.Error(ENAMETOOLONG);
  std::lock_guard lock(mu_);
  Inode* dir = Get(req.nodeid());
  if (!dir) return reply.Error(ENOENT);
  if (!dir->is_dir()) return reply.Error(ENOTDIR);
  uint64_t ino = dir->dir->Find(std::string(name));
  if (!ino) {
    // A negative entry with a timeout lets the kernel cache "no such file" too.
    fuse_entry_out out{};
    SplitTimeout(opts_.entry_timeout_s, &out.entry_valid, &out.entry_valid_nsec);
    return reply.Ok(out);
  }
  ReplyEntry(Get(ino), reply);
}

void Filesystem::OpFORGET(const Request& req, Reply& reply) {
  reply.NoReply();
  std::lock_guard lock(mu_);
  Inode* in = Get(req.nodeid());
  if (!in) return;
  uint64_t n = req.In<fuse_forget_in>().nlookup;
  in->nlookup = n >= in->nlookup ? 0 : in->nlookup - n;
  MaybeFree(in);
}

void Filesystem::OpBATCH_FORGET(const Request& req, Reply& reply) {
  reply.NoReply();
  uint32_t count = req.In<fuse_batch_forget_in>().count;
  if (req.payload_len() / sizeof(fuse_forget_one) < count) {
    counters_.malformed++;
    return;
  }
  const auto* items = reinterpret_cast<const fuse_forget_one*>(req.payload());
  std::lock_guard lock(mu_);
  for (uint32_t i = 0; i < count; ++i) {
    Inode* in = Get(items[i].nodeid);
    if (!in) continue;
    in->nlookup = items[i].nlookup >= in->nlookup ? 0 : in->nlookup - items[i].nlookup;
    MaybeFree(in);
  }
}

void Filesystem::OpGETATTR(const Request& req, Reply& reply) {
  std::lock_guard lock(mu_);
  Inode* in = Get(req.nodeid());
  if (!in) return reply.Error(ENOENT);
  fuse_attr_out out{};
  SplitTimeout(opts_.attr_timeout_s, &out.attr_valid, &out.attr_valid_nsec);
  FillAttr(in, &out.attr);
  reply.Ok(out);
}

void Filesystem::OpSETATTR(const Request& req, Reply& reply) {
  const auto& in = req.In<fuse_setattr_in>();
  std::lock_guard lock(mu_);
  Inode* node = Get(req.nodeid());
  if (!node) return reply.Error(ENOENT);
  timespec now = Now();
  if (in.valid & FATTR_SIZE) {
    if (node->is_dir()) return reply.Error(EISDIR);
    if (!node->data) return reply.Error(EINVAL);
    // Growing a file allocates nothing (a hole), so it is not refused, as on tmpfs: the blocks are
    // counted when written.
    FdRef fd;
    if (int e = node->data->Open(O_RDWR, &fd)) return reply.Error(e);
    if (ftruncate(fd->fd, static_cast<off_t>(in.size)) != 0) return reply.Error(errno);
    ClipFallocated(node, in.size);
    node->ctime = now;
    if (node->open_count == 0) Account(node);
    SizeTiers();
  }
  if (in.valid & FATTR_MODE) {
    node->mode = (node->mode & S_IFMT) | (in.mode & 07777);
    node->ctime = now;
  }
  // With FUSE_HANDLE_KILLPRIV_V2 the kernel asks in two ways (fs/fuse/dir.c): FATTR_KILL_SUIDGID
  // with a chown of a non-directory (always) or a truncate by a caller without CAP_FSETID; and,
  // for a write (passthrough or not), fallocate or chown(-1, -1), file_remove_privs' notify_change
  // arrives as a SETATTR carrying no attribute at all: fuse_setattr strips ATTR_KILL_SUID/SGID
  // and ATTR_MODE and still sends what is left (ATTR_FORCE). The kernel sends that only when its
  // (cached) mode has the bits and the caller lacks CAP_FSETID, so honouring it is tmpfs' rule,
  // and the reply's mode updates the kernel's cache (later writes go S_NOSEC). Decided on the
  // owner and group before a chown, as chown_common does.
  constexpr uint32_t kAttrBits = FATTR_MODE | FATTR_UID | FATTR_GID | FATTR_SIZE | FATTR_ATIME | FATTR_MTIME |
                                 FATTR_ATIME_NOW | FATTR_MTIME_NOW | FATTR_CTIME | FATTR_KILL_SUIDGID;
  const bool remove_privs = killpriv_v2_ && node->is_reg() && !(in.valid & kAttrBits);
  // The kernel asks for a write or truncate only when the caller lacks CAP_FSETID; for a chown it
  // always asks, and the caller's privilege shows only as uid 0 (FUSE passes no capabilities).
  const bool privileged = (in.valid & (FATTR_UID | FATTR_GID)) && req.h().uid == 0;
  if ((in.valid & FATTR_KILL_SUIDGID) || remove_privs) KillSuidGid(req, node, now, privileged);
  if (in.valid & FATTR_UID) node->uid = in.uid, node->ctime = now;
  if (in.valid & FATTR_GID) node->gid = in.gid, node->ctime = now;
  if (in.valid & (FATTR_ATIME | FATTR_MTIME | FATTR_ATIME_NOW | FATTR_MTIME_NOW)) {
    timespec times[2] = {{0, UTIME_OMIT}, {0, UTIME_OMIT}};
    if (in.valid & FATTR_ATIME_NOW) times[0] = now;
    else if (in.valid & FATTR_ATIME) times[0] = {static_cast<time_t>(in.atime), static_cast<long>(in.atimensec)};
    if (in.valid & FATTR_MTIME_NOW) times[1] = now;
    else if (in.valid & FATTR_MTIME) times[1] = {static_cast<time_t>(in.mtime), static_cast<long>(in.mtimensec)};
    if (times[0].tv_nsec != UTIME_OMIT) node->atime = times[0];
    if (times[1].tv_nsec != UTIME_OMIT) node->mtime = times[1];
    if (node->data) {
      FdRef fd;
      if (int e = node->data->Open(O_RDWR, &fd)) return reply.Error(e);
      if (futimens(fd->fd, times) != 0) return reply.Error(errno);
    }
    node->ctime = now;
  }
  if (in.valid & FATTR_CTIME) node->ctime = {static_cast<time_t>(in.ctime), static_cast<long>(in.ctimensec)};
  fuse_attr_out out{};
  SplitTimeout(opts_.attr_timeout_s, &out.attr_valid, &out.attr_valid_nsec);
  FillAttr(node, &out.attr);
  reply.Ok(out);
}

int Filesystem::MakeNode(const Request& req, uint64_t parent, std::string_view name, uint32_t mode,
                         uint32_t rdev, const std::string* link, Inode** out, FdRef* opened) {
  if (int e = CheckName(name)) return e;
  Inode* dir = Get(parent);
  if (!dir) return ENOENT;
  if (!dir->is_dir()) return ENOTDIR;
  if (dir->nlink == 0) return ENOENT;  // a removed directory takes no new entries
  std::string key(name);
  if (dir->dir->Find(key)) return EEXIST;
  // The one admission point for a new inode: the inode quota, and its name and symlink target
  // against the size quota (they live on the daemon's heap).
  if (int e = ReserveInode()) return e;
  if (int e = ReserveMeta(key.size() + (link ? link->size() : 0))) return e;
  std::shared_ptr<FileData> data;
  if (S_ISREG(mode)) {
    Tier tier = Tier::kMemory;
    if (store_.has_disk_tier() && !NewFileFitsInMemory()) tier = Tier::kDisk;
    if (BytesUsed() >= SizeQuota()) return ENOSPC;
    // The inode number and generation it will get (NewInode takes the last free slot, or a new one).
    uint64_t next = free_slots_.empty() ? slots_.size() : free_slots_.back();
    uint64_t gen = next < slot_generation_.size() ? slot_generation_[next] + 1 : 1;
    int e = store_.NewFile(tier, next, gen, &data, opened);
    if (e && tier == Tier::kMemory && store_.has_disk_tier()) tier = Tier::kDisk, e = store_.NewFile(tier, next, gen, &data, opened);
    if (e) return e;
  }
  uint32_t gid = req.h().gid;
  if (dir->mode & S_ISGID) {  // BSD group semantics for setgid directories, as tmpfs does
    gid = dir->gid;
    if (S_ISDIR(mode)) mode |= S_ISGID;
  }
  Inode* in = NewInode(mode, req.h().uid, gid);
  in->rdev = rdev;
  in->data = std::move(data);
  if (S_ISDIR(mode)) {
    in->dir = std::make_unique<Directory>();
    in->dir->parent = parent;
    in->nlink = 2;
    dir->nlink++;
  } else {
    in->nlink = 1;
  }
  if (link) in->link = *link, meta_bytes_ += link->size();
  AddEntry(dir, key, in->ino);
  dir->mtime = dir->ctime = in->ctime;
  // The name takes room, and the new file's tier gets what is left (a created file: at its open).
  if (!S_ISREG(mode)) SizeTiers();
  *out = in;
  return 0;
}

void Filesystem::OpMKNOD(const Request& req, Reply& reply) {
  const auto& in = req.In<fuse_mknod_in>();
  std::string_view name;
  if (!req.String(0, &name)) return reply.Error(EINVAL);
  uint32_t type = in.mode & S_IFMT;
  if (type != S_IFREG && type != S_IFIFO && type != S_IFSOCK && type != S_IFCHR && type != S_IFBLK)
    return reply.Error(EINVAL);
  std::lock_guard lock(mu_);
  Inode* node;
  if (int e = MakeNode(req, req.nodeid(), name, in.mode, in.rdev, nullptr, &node)) return reply.Error(e);
  SizeTiers();
  ReplyEntry(node, reply);
}

void Filesystem::OpMKDIR(const Request& req, Reply& reply) {
  const auto& in = req.In<fuse_mkdir_in>();
  std::string_view name;
  if (!req.String(0, &name)) return reply.Error(EINVAL);
  std::lock_guard lock(mu_);
  Inode* node;
  if (int e = MakeNode(req, req.nodeid(), name, S_IFDIR | (in.mode & 07777), 0, nullptr, &node))
    return reply.Error(e);
  ReplyEntry(node, reply);
}

void Filesystem::OpSYMLINK(const Request& req, Reply& reply) {
  std::string_view name, target;
  if (!req.String(0, &name) || !req.String(1, &target)) return reply.Error(EINVAL);
  if (target.size() > kMaxSymlink) return reply.Error(ENAMETOOLONG);
  std::string link(target);
  std::lock_guard lock(mu_);
  Inode* node;
  if (int e = MakeNode(req, req.nodeid(), name, S_IFLNK | 0777, 0, &link, &node)) return reply.Error(e);
  ReplyEntry(node, reply);
}

void Filesystem::OpREADLINK(const Request& req, Reply& reply) {
  std::lock_guard lock(mu_);
  Inode* in = Get(req.nodeid());
  if (!in) return reply.Error(ENOENT);
  if (!S_ISLNK(in->mode)) return reply.Error(EINVAL);
  reply.Bytes(in->link.data(), in->link.size());
}

void Filesystem::OpLINK(const Request& req, Reply& reply) {
  const auto& in = req.In<fuse_link_in>();
  std::string_view name;
  if (!req.String(0, &name)) return reply.Error(EINVAL);
  if (int e = CheckName(name)) return reply.Error(e);
  std::lock_guard lock(mu_);
  Inode* target = Get(in.oldnodeid);
  Inode* dir = Get(req.nodeid());
  if (!target || !dir) return reply.Error(ENOENT);
  if (!dir->is_dir()) return reply.Error(ENOTDIR);
  if (target->is_dir()) return reply.Error(EPERM);
  if (target->nlink == 0) return reply.Error(ENOENT);  // linking an unlinked file is refused, as on tmpfs
  std::string key(name);
  if (dir->dir->Find(key)) return reply.Error(EEXIST);
  if (target->nlink >= 0xffffffffu - 1) return reply.Error(EMLINK);
  // tmpfs charges every link against nr_inodes, and its name takes room like any name.
  if (int e = ReserveInode()) return reply.Error(e);
  if (int e = ReserveMeta(key.size())) return reply.Error(e);
  AddEntry(dir, key, target->ino);
  target->nlink++;
  extra_links_++;
  timespec now = Now();
  target->ctime = dir->mtime = dir->ctime = now;
  ReplyEntry(target, reply);
}

// The entry a request names: (its parent directory, its first string). Requires mu_.
int Filesystem::ResolveEntry(const Request& req, std::string* key, Inode** dir, Inode** child) {
  std::string_view name;
  if (!req.String(0, &name)) return EINVAL;
  *dir = Get(req.nodeid());
  if (!*dir) return ENOENT;
  if (!(*dir)->is_dir()) return ENOTDIR;
  *key = std::string(name);
  *child = Get((*dir)->dir->Find(*key));
  return *child ? 0 : ENOENT;
}

void Filesystem::OpUNLINK(const Request& req, Reply& reply) {
  std::lock_guard lock(mu_);
  std::string key;
  Inode *dir, *in;
  if (int e = ResolveEntry(req, &key, &dir, &in)) return reply.Error(e);
  if (in->is_dir()) return reply.Error(EISDIR);
  RemoveEntry(dir, key);
  if (in->nlink > 1) extra_links_--;
  in->nlink--;
  in->ctime = dir->mtime = dir->ctime = Now();
  MaybeFree(in);
  reply.Ok();
}

void Filesystem::OpRMDIR(const Request& req, Reply& reply) {
  std::lock_guard lock(mu_);
  std::string key;
  Inode *dir, *in;
  if (int e = ResolveEntry(req, &key, &dir, &in)) return reply.Error(e);
  if (!in->is_dir()) return reply.Error(ENOTDIR);
  if (!in->dir->empty()) return reply.Error(ENOTEMPTY);
  RemoveEntry(dir, key);
  dir->nlink--;
  in->nlink = 0;
  in->ctime = dir->mtime = dir->ctime = Now();
  MaybeFree(in);
  reply.Ok();
}

int Filesystem::DoRename(uint64_t olddir_ino, std::string_view oldname, uint64_t newdir_ino,
                         std::string_view newname, uint32_t flags) {
  if (flags & ~(kRenameNoReplace | kRenameExchange)) return (flags & kRenameWhiteout) ? EINVAL : EINVAL;
  if ((flags & kRenameNoReplace) && (flags & kRenameExchange)) return EINVAL;
  if (int e = CheckName(newname)) return e;
  Inode* od = Get(olddir_ino);
  Inode* nd = Get(newdir_ino);
  if (!od || !nd) return ENOENT;
  if (!od->is_dir() || !nd->is_dir()) return ENOTDIR;
  std::string okey(oldname), nkey(newname);
  Inode* src = Get(od->dir->Find(okey));
  if (!src) return ENOENT;
  Inode* dst = Get(nd->dir->Find(nkey));
  timespec now = Now();
  if (flags & kRenameExchange) {
    if (!dst) return ENOENT;
    RemoveEntry(od, okey);
    RemoveEntry(nd, nkey);
    AddEntry(od, okey, dst->ino);
    AddEntry(nd, nkey, src->ino);
    if (od != nd) {
      if (src->is_dir()) src->dir->parent = nd->ino, od->nlink--, nd->nlink++;
      if (dst->is_dir()) dst->dir->parent = od->ino, nd->nlink--, od->nlink++;
    }
    src->ctime = dst->ctime = od->mtime = od->ctime = nd->mtime = nd->ctime = now;
    return 0;
  }
  if (dst) {
    if (flags & kRenameNoReplace) return EEXIST;
    if (dst == src) return 0;  // two links to one inode: POSIX says do nothing
    if (src->is_dir()) {
      if (!dst->is_dir()) return ENOTDIR;
      if (!dst->dir->empty()) return ENOTEMPTY;
    } else if (dst->is_dir()) {
      return EISDIR;
    }
  }
  // Moving a directory under itself is refused by the VFS before we see it; check anyway.
  if (src->is_dir() && od != nd) {
    for (uint64_t p = nd->ino; p != FUSE_ROOT_ID;) {
      if (p == src->ino) return EINVAL;
      Inode* pi = Get(p);
      if (!pi || !pi->dir) break;
      p = pi->dir->parent;
    }
  }
  // The new name may be longer than the old: it takes room like any name.
  if (nkey.size() > okey.size() + (dst ? nkey.size() : 0)) {
    if (int e = ReserveMeta(nkey.size() - okey.size())) return e;
  }
  if (dst) {
    RemoveEntry(nd, nkey);
    if (dst->is_dir()) {
      dst->nlink = 0;
      nd->nlink--;
    } else {
      if (dst->nlink > 1) extra_links_--;
      dst->nlink--;
    }
    dst->ctime = now;
  }
  RemoveEntry(od, okey);
  AddEntry(nd, nkey, src->ino);
  if (src->is_dir() && od != nd) {
    src->dir->parent = nd->ino;
    od->nlink--;
    nd->nlink++;
  }
  src->ctime = od->mtime = od->ctime = nd->mtime = nd->ctime = now;
  if (dst) MaybeFree(dst);
  return 0;
}

void Filesystem::OpRENAME(const Request& req, Reply& reply) {
  std::string_view oldname, newname;
  if (!req.String(0, &oldname) || !req.String(1, &newname)) return reply.Error(EINVAL);
  std::lock_guard lock(mu_);
  int e = DoRename(req.nodeid(), oldname, req.In<fuse_rename_in>().newdir, newname, 0);
  e ? reply.Error(e) : reply.Ok();
}

void Filesystem::OpRENAME2(const Request& req, Reply& reply) {
  std::string_view oldname, newname;
  if (!req.String(0, &oldname) || !req.String(1, &newname)) return reply.Error(EINVAL);
  const auto& in = req.In<fuse_rename2_in>();
  std::lock_guard lock(mu_);
  int e = DoRename(req.nodeid(), oldname, in.newdir, newname, in.flags);
  e ? reply.Error(e) : reply.Ok();
}

// ---------------------------------------------------------------------------------------------
// Files

namespace {
// Whether the caller of `req` is in group `gid`: its fsgid, or one of its supplementary groups
// (read from /proc, which the daemon's pid namespace shows: the kernel sends pids in it). Only
// asked when a file with S_ISGID is written, truncated or chowned. Unreadable: not in the group,
// which clears the bit (the safe side).
bool CallerInGroup(const Request& req, uint32_t gid) {
  if (req.h().gid == gid) return true;
  char path[64];
  snprintf(path, sizeof(path), "/proc/%u/status", req.h().pid);
  FILE* f = fopen(path, "re");
  if (!f) return false;
  char line[4096];
  bool found = false;
  while (fgets(line, sizeof(line), f)) {
    if (strncmp(line, "Groups:", 7) != 0) continue;
    for (char* p = line + 7; *p;) {
      char* end;
      unsigned long g = strtoul(p, &end, 10);
      if (end == p) break;
      if (g == gid) found = true;
      p = end;
    }
    break;
  }
  fclose(f);
  return found;
}

// What a write, truncate or chown clears, as the VFS's setattr_should_drop_suidgid does for
// tmpfs (fs/attr.c): S_ISUID always; S_ISGID with group-execute, or when the caller is neither in
// the file's group nor privileged (CAP_FSETID).
uint32_t SuidGidToKill(const Request& req, const Inode* in, bool privileged) {
  uint32_t kill = in->mode & S_ISUID;
  if (in->mode & S_ISGID) {
    if ((in->mode & S_IXGRP) || (!privileged && !CallerInGroup(req, in->gid))) kill |= S_ISGID;
  }
  return kill;
}
}  // namespace

void Filesystem::KillSuidGid(const Request& req, Inode* in, const timespec& now, bool privileged) {
  if (in->is_dir()) return;
  uint32_t kill = SuidGidToKill(req, in, privileged);
  if (kill) {
    in->mode &= ~kill;
    in->ctime = now;
  }
  // "clear security.capability on write, truncate and chown" is the other half of the contract.
  auto cap = in->xattrs.find("security.capability");
  if (cap != in->xattrs.end()) {
    meta_bytes_ -= std::min<uint64_t>(meta_bytes_, cap->first.size() + cap->second.size());
    in->xattrs.erase(cap);
    in->ctime = now;
  }
}

// Clearing setuid/setgid under passthrough, and how it differs from tmpfs. A passthrough write
// never reaches the daemon, but file_remove_privs still runs on the FUSE file before it
// (backing_file_write_iter) and asks through an attribute-less SETATTR (see OpSETATTR), so the
// bits go on the first write by an unprivileged writer, as on tmpfs; an open for writing alone
// changes nothing, as on tmpfs (clearing there would also leave the kernel's cached mode stale,
// since OPEN's reply carries no attributes). The kernel asks at OPEN only for O_TRUNC by a caller
// without CAP_FSETID (FUSE_OPEN_KILL_SUIDGID). Differences left: after such an open the kernel
// refreshes size and times but not the mode (FUSE_STATX_MODSIZE), so a statx asking for the mode
// alone sees the old bits until the next write or attribute refresh; and a chown's caller counts as
// privileged when it is uid 0 (FUSE passes no capabilities). The mount is nosuid, so the bits
// never grant anything.
int Filesystem::OpenRegular(Inode* in, uint32_t flags, abi::OpenOut* out, FdRef created) {
  memset(out, 0, sizeof(*out));
  // A new file passes AdmitWrite without a move (the rule MakeNode placed it by, same lock), so
  // its fd, held meanwhile, never reaches the mapping check.
  const FileData* created_for = created ? in->data.get() : nullptr;
  out->fh = in->ino;
  const bool writing = (flags & O_ACCMODE) != O_RDONLY;
  if ((flags & O_TRUNC) && writing) {
    FdRef fd;
    if (int e = in->data->Open(O_RDWR, &fd)) return e;
    if (ftruncate(fd->fd, 0) != 0) return errno;
    in->fallocated.clear();
    in->ctime = in->mtime = Now();
    if (in->open_count == 0) Account(in);
  }
  // Before the handle pins an fd of ours: the mapping check must see only other files.
  if (writing && in->data->tier == Tier::kMemory) {
    if (int e = AdmitWrite(in)) return e;
  }
  if (!in->data->pinned && created && in->data.get() == created_for) {
    in->data->pinned = std::move(created);  // a CREATE: saves a close and an openat under the lock
  } else if (!in->data->pinned) {
    FdRef fd;
    if (int e = in->data->Open(O_RDWR, &fd)) return e;
    in->data->pinned = std::move(fd);
  }
  if (passthrough_ && backing_) {
    // A refused registration (ELOOP: a disk tier stacked on overlayfs or FUSE; ENOMEM, EMFILE)
    // under mode auto falls back to serving this file through the daemon, counted and logged, not
    // failed: the daemon's READ/WRITE use the same backing file, so no byte is lost or stale, and
    // an EIO here would fail the program's open for a speed loss. Mode passthrough promised that no
    // data byte goes through the daemon, so there the open fails with EIO (counted and logged the
    // same way) rather than break the promise unseen. Only the first open of a closed inode may
    // register: the kernel answers EIO to a passthrough open beside a cached one (fs/fuse/iomode.c),
    // so an inode's opens stay in one mode until its last close.
    int refused = 0;
    if (!in->backing.valid() && in->open_count == 0) {
      int id = backing_->Open(in->data->pinned->fd);
      if (id >= 0) in->backing = BackingId(&backing_, id);
      else refused = -id;
    }
    const bool required = !in->backing.valid() && opts_.mode == "passthrough";
    if (refused) {
      uint64_t n = backing_open_failures_.fetch_add(1) + 1;
      if ((n & (n - 1)) == 0)  // the 1st, 2nd, 4th, 8th…: seen, without a line per open
        fprintf(stderr, "ephemera: passthrough refused for inode %llu (BACKING_OPEN: %s); %s (%llu such opens)\n",
                static_cast<unsigned long long>(in->ino), ErrnoCode(refused).c_str(),
                required ? "open failed with EIO (mode passthrough)" : "served through the daemon",
                static_cast<unsigned long long>(n));
    }
    if (required) {
      if (in->open_count == 0 && in->data->dirfd >= 0) in->data->pinned.reset();  // a closed file holds no fd
      return EIO;
    }
    if (in->backing.valid()) {
      out->open_flags |= abi::kFopenPassthrough;
      out->backing_id = in->backing.get();
    }
  } else if (writeback_) {
    out->open_flags |= FOPEN_KEEP_CACHE;  // only the kernel writes our files: its cache stays valid
  }
  in->open_count++;
  open_files_.insert(in);
  in->open_epoch++;
  in->last_open_ms = NowMs();
  if (writing) SizeTiers();  // what every open file holds now: the room this one may grow into
  return 0;
}

void Filesystem::OpCREATE(const Request& req, Reply& reply) {
  const auto& in = req.In<fuse_create_in>();
  std::string_view name;
  if (!req.String(0, &name)) return reply.Error(EINVAL);
  std::unique_lock lock(mu_);
  Inode* dir = Get(req.nodeid());
  if (!dir) return reply.Error(ENOENT);
  if (!dir->is_dir()) return reply.Error(ENOTDIR);
  if (uint64_t there = (in.flags & O_EXCL) ? 0 : dir->dir->Find(std::string(name))) {
    // An existing file opened for writing just after its last close: as in OpOPEN; all looked up again.
    Inode* node = Get(there);
    if (node && node->is_reg() && WritingMayMove(node, in.flags) && AwaitCloses(lock, node->data)) {
      dir = Get(req.nodeid());
      if (!dir || !dir->is_dir()) return reply.Error(ENOENT);
    }
  }
  Inode* node = nullptr;
  FdRef created;
  uint64_t existing = dir->dir->Find(std::string(name));
  if (existing) {
    // Lost a race with another creator: O_EXCL fails, otherwise open what is there.
    if (in.flags & O_EXCL) return reply.Error(EEXIST);
    node = Get(existing);
    if (node->is_dir()) return reply.Error(EISDIR);
    if (!node->is_reg()) return reply.Error(EACCES);
    // Only an existing file is truncated, so only it loses the bits (a new file keeps its mode).
    if ((in.open_flags & FUSE_OPEN_KILL_SUIDGID) && (in.flags & O_TRUNC)) KillSuidGid(req, node, Now(), false);
  } else {
    if (int e = MakeNode(req, req.nodeid(), name, S_IFREG | (in.mode & 07777), 0, nullptr, &node, &created))
      return reply.Error(e);
  }
  const bool made = !existing;
  abi::OpenOut open_out;
  if (int e = OpenRegular(node, in.flags, &open_out, std::move(created))) {
    // A file made here and not opened leaves no name: the kernel keeps its negative dentry for a
    // failed create, so the name would exist here and be ENOENT there until the entry timed out.
    if (made && node->open_count == 0) {
      dir = Get(req.nodeid());
      if (dir && dir->is_dir() && dir->dir->Find(std::string(name)) == node->ino) {
        RemoveEntry(dir, std::string(name));
        node->nlink = 0;
        dir->mtime = dir->ctime = Now();
        MaybeFree(node);
      }
    }
    return reply.Error(e);
  }
  fuse_entry_out entry;
  FillEntry(node, &entry);
  node->nlookup++;
  reply.Bytes2(&entry, sizeof(entry), &open_out, sizeof(open_out));
}

void Filesystem::OpOPEN(const Request& req, Reply& reply) {
  const auto& in = req.In<fuse_open_in>();
  std::unique_lock lock(mu_);
  Inode* node = Get(req.nodeid());
  if (!node) return reply.Error(ENOENT);
  if (node->is_dir()) return reply.Error(EISDIR);
  if (!node->data) return reply.Error(node->is_reg() ? ENOENT : ENXIO);  // unlinked meanwhile; or a fifo/device
  // Reopened for writing just after its last close (a log appended to): AdmitWrite may have to move
  // it to disk, which it can only once that RELEASE's closes are done.
  if (WritingMayMove(node, in.flags) && AwaitCloses(lock, node->data)) {
    node = Get(req.nodeid());
    if (!node || !node->data) return reply.Error(ENOENT);
  }
  if ((in.open_flags & FUSE_OPEN_KILL_SUIDGID) && (in.flags & O_TRUNC)) KillSuidGid(req, node, Now(), false);
  abi::OpenOut out;
  if (int e = OpenRegular(node, in.flags, &out)) return reply.Error(e);
  reply.Ok(out);
}

void Filesystem::OpRELEASE(const Request& req, Reply& reply) {
  bool notify = false;
  uint64_t ino = 0, bytes = 0;
  Tier tier = Tier::kMemory;
  BackingId backing;  // moved out under the lock, closed after it
  FdRef unpinned;  // closed after the lock too, for the same reason
  std::shared_ptr<FileData> closing;  // whose closes are pending until both are done
  {
    std::lock_guard lock(mu_);
    Inode* in = Get(req.nodeid());
    if (in && in->open_count > 0) {
      in->open_count--;
      in->last_close_ms = NowMs();
      if (in->open_count == 0) {
        open_files_.erase(in);
        // Released on last close, so a closed inode holds no kernel reference to its backing
        // file and may move between tiers. The ioctl itself runs after the lock: RELEASE comes
        // asynchronously, beside the closer's next request (in a create loop, the GETATTR of the
        // directory), which waited for it on the lock. Nothing uses the id meanwhile: the kernel
        // dropped the inode's backing at its last close, before it sent this RELEASE, and an
        // OPEN in between registers a fresh one.
        backing = std::move(in->backing);
        // Under passthrough we never see writes: the backing file says what the file holds now.
        Account(in);
        SizeTiers();
        // A closed file costs no fd (a memfd, having no name, keeps its own).
        if (in->data && in->data->dirfd >= 0) unpinned = std::move(in->data->pinned);
        if (in->data && (unpinned || backing.valid())) closing = in->data, closing->closing++;
        if (in->data && in->nlink > 0) notify = true, ino = in->ino, bytes = in->accounted_bytes, tier = in->data->tier;
      }
      MaybeFree(in);
    }
  }
  backing.reset();  // FUSE_DEV_IOC_BACKING_CLOSE, before the reply as before
  reply.Ok();
  if (release_close_delay_us_ && closing) usleep(release_close_delay_us_);
  unpinned.reset();
  if (closing) {
    // A move or an open for writing that came meanwhile waits for this (AwaitCloses); seq_cst on
    // both counters, so either it sees closing at 0 or we see it waiting and wake it.
    closing->closing--;
    if (close_waiters_.load() > 0) {
      std::lock_guard lock(mu_);
      closes_done_.notify_all();
    }
    closing.reset();
  }
  if (notify && on_close_) on_close_(ino, bytes, tier);
}

bool Filesystem::AwaitCloses(std::unique_lock<std::recursive_mutex>& lock, const std::shared_ptr<FileData>& data) {
  if (!data || data->closing.load() == 0) return false;
  close_waiters_++;
  // Bounded: a close that never finishes costs a refused move (counted as mapped), not a hung request.
  closes_done_.wait_for(lock, std::chrono::seconds(1), [&] { return data->closing.load() == 0; });
  close_waiters_--;
  return true;
}

void Filesystem::OpFLUSH(const Request&, Reply& reply) {
  if (opts_.answer_flush_enosys) return reply.Error(ENOSYS);  // saves a round trip per close()
  reply.Ok();
}

void Filesystem::OpFSYNC(const Request& req, Reply& reply) {
  // /tmp holds nothing that survives the daemon, so durability is moot: fsync only has to
  // order, and every write is already visible. Answering 0 keeps fsync-heavy tools fast.
  reply.Ok();
}
void Filesystem::OpFSYNCDIR(const Request&, Reply& reply) { reply.Ok(); }
void Filesystem::OpSYNCFS(const Request&, Reply& reply) { reply.Ok(); }

// The backing file of inode `ino`, held so the caller can do its I/O without the lock (a tier move
// swaps the inode's data, never the file under a reader). Requires mu_. 0, ENOENT, or `no_data`
// for an inode without data (a directory, a symlink, a fifo).
int Filesystem::DataOf(uint64_t ino, int no_data, FdRef* out) {
  Inode* node = Get(ino);
  if (!node) return ENOENT;
  if (!node->data) return no_data;
  return node->data->Open(O_RDWR, out);  // the handle's pinned fd: requests with a handle come here
}

void Filesystem::OpREAD(const Request& req, Reply& reply) {
  // Reached only without passthrough (writeback mode or a refused backing registration).
  const auto& in = req.In<fuse_read_in>();
  FdRef data;
  {
    std::lock_guard lock(mu_);
    if (int e = DataOf(req.nodeid(), EISDIR, &data)) return reply.Error(e);
  }
  thread_local std::vector<uint8_t> buf;
  if (buf.size() < in.size) buf.resize(in.size);
  ssize_t n = pread(data->fd, buf.data(), in.size, static_cast<off_t>(in.offset));
  if (n < 0) return reply.Error(errno);
  reply.Bytes(buf.data(), static_cast<size_t>(n));
}

void Filesystem::OpWRITE(const Request& req, Reply& reply) {
  const auto& in = req.In<fuse_write_in>();
  if (req.payload_len() < in.size) return reply.Error(EINVAL);
  FdRef data;
  {
    std::lock_guard lock(mu_);
    if (int e = DataOf(req.nodeid(), EISDIR, &data)) return reply.Error(e);
    struct stat st;
    uint64_t end = in.offset + in.size;
    if (fstat(data->fd, &st) == 0 && end > static_cast<uint64_t>(st.st_size) &&
        BytesUsed() + (end - st.st_size) > SizeQuota())
      return reply.Error(ENOSPC);
  }
  ssize_t n = pwrite(data->fd, req.payload(), in.size, static_cast<off_t>(in.offset));
  if (n < 0) return reply.Error(errno);
  if (in.write_flags & FUSE_WRITE_KILL_SUIDGID) {  // writes through the daemon (no passthrough)
    std::lock_guard lock(mu_);
    if (Inode* node = Get(req.nodeid())) KillSuidGid(req, node, Now(), false);
  }
  fuse_write_out out{};
  out.size = static_cast<uint32_t>(n);
  reply.Ok(out);
}

namespace {

// Runs `helper --fallocate CGROUP MODE OFFSET LENGTH` with `fd` as its fd 3 and waits for it.
// 0 on success, the errno fallocate failed with (> 0), or -1 when the helper could not run or could
// not join the cgroup. posix_spawn (vfork + exec) is safe from this multithreaded process; it costs
// about a millisecond, paid only by allocating fallocates on the memory tier.
int ChargedFallocate(const Filesystem::ChargeAgent& agent, int fd, uint32_t mode, uint64_t offset, uint64_t length,
                      std::atomic<uint64_t>* timeouts) {
  posix_spawn_file_actions_t actions;
  if (posix_spawn_file_actions_init(&actions) != 0) return -1;
  posix_spawn_file_actions_adddup2(&actions, fd, 3);  // dup2 clears O_CLOEXEC on the copy
  std::string m = std::to_string(mode), o = std::to_string(offset), l = std::to_string(length);
  std::string arg0 = agent.helper, flag = "--fallocate", cg = agent.cgroup_dir;
  char* argv[] = {arg0.data(), flag.data(), cg.data(), m.data(), o.data(), l.data(), nullptr};
  char* envp[] = {nullptr};
  pid_t pid = -1;
  int e = posix_spawn(&pid, agent.helper.c_str(), &actions, nullptr, argv, envp);
  posix_spawn_file_actions_destroy(&actions);
  if (e != 0) return -1;
  // Bounded: a helper stuck in a cgroup that is OOM-paused or frozen must not hold a serving
  // thread for ever. After the deadline it is killed and the call answered ENOSPC (allocating here
  // instead would charge the container's pages to the daemon, past the container's limit).
  constexpr int64_t kDeadlineMs = 5000;
  const int64_t deadline = NowMs() + kDeadlineMs;
  int status = 0;
  for (int delay_us = 200;;) {
    pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) break;
    if (r < 0 && errno != EINTR) return -1;
    if (NowMs() > deadline) {
      kill(pid, SIGKILL);
      while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
      }
      timeouts->fetch_add(1);
      return ENOSPC;
    }
    usleep(delay_us);
    delay_us = std::min(delay_us * 2, 20000);
  }
  if (!WIFEXITED(status)) return -1;
  int code = WEXITSTATUS(status);
  if (code == 0) return 0;
  return code < 200 ? code : -1;  // 200: cgroup not joined, 201: usage
}

}  // namespace

void Filesystem::OpFALLOCATE(const Request& req, Reply& reply) {
  const auto& in = req.In<fuse_fallocate_in>();
  FdRef data;
  Tier tier = Tier::kMemory;
  ChargeAgent agent;
  {
    std::lock_guard lock(mu_);
    if (int e = DataOf(req.nodeid(), ENODEV, &data)) return reply.Error(e);
    tier = Get(req.nodeid())->data->tier;
    // What the call may still allocate: the range past the blocks the file holds (a range already
    // allocated costs nothing, as on tmpfs). Refused whole, as tmpfs refuses it (ext4 would leave a
    // partial allocation behind).
    struct stat st{};
    fstat(data->fd, &st);
    uint64_t held = static_cast<uint64_t>(st.st_blocks) * 512, end = in.offset + in.length;
    uint64_t need = end > held ? std::min<uint64_t>(in.length, end - held) : 0;
    if (!(in.mode & FALLOC_FL_PUNCH_HOLE) && BytesUsed() + need > SizeQuota()) return reply.Error(ENOSPC);
    SizeTiers();
    if (tier == Tier::kMemory && !(in.mode & FALLOC_FL_PUNCH_HOLE) && placement_.memory_budget != UINT64_MAX) {
      // Pages an open file allocates cannot be spilled, so an allocation past the container's room
      // would end in an OOM kill; tmpfs answers ENOSPC when full, and so do we.
      uint64_t memory = 0, disk = 0;
      LiveTierBytes(&memory, &disk);
      if (memory + need > placement_.memory_budget) return reply.Error(ENOSPC);
    }
    agent = charge_agent_;
  }
  if (tier == Tier::kMemory && !(in.mode & FALLOC_FL_PUNCH_HOLE) && !agent.cgroup_dir.empty()) {
    int r = ChargedFallocate(agent, data->fd, in.mode, in.offset, in.length, &fallocate_timeouts_);
    if (r >= 0) {
      std::lock_guard lock(mu_);
      if (r == 0) NoteFallocate(req.nodeid(), data, in.mode, in.offset, in.length);
      SizeTiers();  // the other tier's room shrinks by what was allocated
    }
    if (r == 0) return reply.Ok();
    if (r > 0) return reply.Error(r);
    uncharged_fallocates_.fetch_add(1);  // helper unavailable: allocate here rather than fail the function
  }
  int r = fallocate(data->fd, static_cast<int>(in.mode), static_cast<off_t>(in.offset), static_cast<off_t>(in.length));
  int e = r == 0 ? 0 : errno;
  {
    std::lock_guard lock(mu_);
    if (e == 0) NoteFallocate(req.nodeid(), data, in.mode, in.offset, in.length);
    SizeTiers();
  }
  if (e) return reply.Error(e);
  reply.Ok();
}

void Filesystem::NoteFallocate(uint64_t ino, const FdRef& fd, uint32_t mode, uint64_t offset, uint64_t length) {
  Inode* in = Get(ino);
  if (!in || !in->data || !in->data->pinned || in->data->pinned != fd) return;  // moved meanwhile
  uint64_t end = offset + length;
  auto& r = in->fallocated;
  // Remove [offset, end) from the ranges, then add it back unless it was a hole punched.
  for (auto it = r.lower_bound(0); it != r.end();) {
    uint64_t s = it->first, e = it->second;
    if (e <= offset || s >= end) {
      ++it;
      continue;
    }
    it = r.erase(it);
    if (s < offset) r.emplace(s, offset);
    if (e > end) r.emplace(end, e);
  }
  if (!(mode & FALLOC_FL_PUNCH_HOLE)) r.emplace(offset, end);
}

void Filesystem::ClipFallocated(Inode* in, uint64_t size) {
  auto& r = in->fallocated;
  for (auto it = r.begin(); it != r.end();) {
    if (it->first >= size) {
      it = r.erase(it);
    } else {
      it->second = std::min(it->second, size);
      ++it;
    }
  }
}

void Filesystem::SetChargeAgent(ChargeAgent a) {
  std::lock_guard lock(mu_);
  charge_agent_ = std::move(a);
}

void Filesystem::OpLSEEK(const Request& req, Reply& reply) {
  const auto& in = req.In<fuse_lseek_in>();
  FdRef data;
  {
    std::lock_guard lock(mu_);
    if (int e = DataOf(req.nodeid(), EINVAL, &data)) return reply.Error(e);
  }
  off_t r = lseek(data->fd, static_cast<off_t>(in.offset), static_cast<int>(in.whence));
  if (r < 0) return reply.Error(errno);
  fuse_lseek_out out{};
  out.offset = static_cast<uint64_t>(r);
  reply.Ok(out);
}

void Filesystem::OpCOPY_FILE_RANGE(const Request& req, Reply& reply) {
  // Under passthrough a copy made here would put the destination's memory-tier pages on the
  // daemon's cgroup, where the container's adapter cannot see them. ENOSYS makes the kernel stop
  // asking and copy in the caller's context instead (a splice through the passthrough files), so
  // the pages are charged to the container. In writeback mode the daemon holds the memory tier
  // anyway and the adapter counts it, so the copy is served here.
  if (passthrough_) return reply.Error(ENOSYS);
  const auto& in = req.In<fuse_copy_file_range_in>();
  FdRef src, dst;
  {
    std::lock_guard lock(mu_);
    if (!Get(req.nodeid()) || !Get(in.nodeid_out)) return reply.Error(ENOENT);
    if (int e = DataOf(req.nodeid(), EINVAL, &src)) return reply.Error(e);
    if (int e = DataOf(in.nodeid_out, EINVAL, &dst)) return reply.Error(e);
    if (BytesUsed() + in.len > SizeQuota()) {
      struct stat st;
      if (fstat(dst->fd, &st) == 0 && in.off_out + in.len > static_cast<uint64_t>(st.st_size))
        return reply.Error(ENOSPC);
    }
  }
  loff_t off_in = static_cast<loff_t>(in.off_in), off_out = static_cast<loff_t>(in.off_out);
  size_t len = std::min<uint64_t>(in.len, UINT32_MAX & ~4095u);
  ssize_t n = copy_file_range(src->fd, &off_in, dst->fd, &off_out, len, 0);
  if (n < 0) return reply.Error(errno);
  fuse_write_out out{};
  out.size = static_cast<uint32_t>(n);
  reply.Ok(out);
}

// ---------------------------------------------------------------------------------------------
// Directories

void Filesystem::OpOPENDIR(const Request& req, Reply& reply) {
  if (no_opendir_) return reply.Error(ENOSYS);  // the kernel stops sending OPENDIR/RELEASEDIR (SetInitState)
  std::lock_guard lock(mu_);
  Inode* in = Get(req.nodeid());
  if (!in) return reply.Error(ENOENT);
  if (!in->is_dir()) return reply.Error(ENOTDIR);
  abi::OpenOut out{};
  out.fh = in->ino;
  reply.Ok(out);
}

void Filesystem::OpRELEASEDIR(const Request&, Reply& reply) { reply.Ok(); }

void Filesystem::ReadDir(const Request& req, Reply& reply, bool plus) {
  const auto& in = req.In<fuse_read_in>();
  thread_local std::vector<uint8_t> buf;
  size_t cap = std::min<uint32_t>(in.size, 1 << 20);
  buf.assign(cap, 0);
  size_t used = 0;
  auto emit = [&](std::string_view name, uint64_t ino, uint32_t mode, uint64_t next_off, Inode* node) -> bool {
    size_t head = plus ? sizeof(fuse_entry_out) + offsetof(fuse_dirent, name) : offsetof(fuse_dirent, name);
    size_t rec = (head + name.size() + 7) & ~size_t(7);
    if (used + rec > cap) return false;
    uint8_t* p = buf.data() + used;
    memset(p, 0, rec);
    fuse_dirent* d;
    if (plus) {
      auto* e = reinterpret_cast<fuse_entry_out*>(p);
      if (node) {
        FillEntry(node, e);
        node->nlookup++;  // the kernel counts a lookup for every entry with a nodeid
      } else {
        e->attr.ino = ino;
        e->attr.mode = mode;  // "." and "..": nodeid 0 means "no entry to cache"
      }
      d = reinterpret_cast<fuse_dirent*>(p + sizeof(fuse_entry_out));
    } else {
      d = reinterpret_cast<fuse_dirent*>(p);
    }
    d->ino = ino;
    d->off = next_off;
    d->namelen = static_cast<uint32_t>(name.size());
    d->type = DirentType(mode);
    memcpy(reinterpret_cast<uint8_t*>(d) + offsetof(fuse_dirent, name), name.data(), name.size());
    used += rec;
    return true;
  };
  std::lock_guard lock(mu_);
  Inode* dir = Get(req.nodeid());
  if (!dir) return reply.Error(ENOENT);
  if (!dir->is_dir()) return reply.Error(ENOTDIR);
  uint64_t off = in.offset;
  if (off < 1 && !emit(".", dir->ino, dir->mode, 1, nullptr)) return reply.Bytes(buf.data(), used);
  if (off < 2) {
    Inode* parent = Get(dir->dir->parent);
    if (!emit("..", parent ? parent->ino : dir->ino, S_IFDIR, 2, nullptr)) return reply.Bytes(buf.data(), used);
  }
  for (auto it = dir->dir->by_cookie.upper_bound(std::max<uint64_t>(off, 2)); it != dir->dir->by_cookie.end(); ++it) {
    Inode* child = Get(it->second.ino);
    if (!child) continue;
    if (!emit(it->second.name, child->ino, child->mode, it->first, plus ? child : nullptr)) break;
  }
  reply.Bytes(buf.data(), used);
}

void Filesystem::OpREADDIR(const Request& req, Reply& reply) { ReadDir(req, reply, false); }
void Filesystem::OpREADDIRPLUS(const Request& req, Reply& reply) { ReadDir(req, reply, true); }

void Filesystem::OpSTATFS(const Request&, Reply& reply) {
  std::lock_guard lock(mu_);
  fuse_statfs_out out{};
  const uint32_t bsize = 4096;
  uint64_t total = SizeQuota();
  uint64_t used = BytesUsed();
  out.st.bsize = bsize;
  out.st.frsize = bsize;
  out.st.blocks = total / bsize;
  uint64_t used_blocks = (used + bsize - 1) / bsize;
  out.st.bfree = out.st.blocks > used_blocks ? out.st.blocks - used_blocks : 0;
  out.st.bavail = out.st.bfree;
  out.st.files = InodeQuota();
  uint64_t inodes_used = live_inodes_ + extra_links_;
  out.st.ffree = out.st.files > inodes_used ? out.st.files - inodes_used : 0;
  out.st.namelen = kMaxName;
  reply.Ok(out);
}

void Filesystem::OpACCESS(const Request& req, Reply& reply) {
  // default_permissions: the kernel checks modes itself; this only answers existence.
  std::lock_guard lock(mu_);
  Get(req.nodeid()) ? reply.Ok() : reply.Error(ENOENT);
}

// ---------------------------------------------------------------------------------------------
// Extended attributes: kept per inode in the daemon, like tmpfs' user.* and trusted.* xattrs.

void Filesystem::OpSETXATTR(const Request& req, Reply& reply) {
  if (!opts_.xattrs) return reply.Error(ENOSYS);
  const auto& in = req.In<SetxattrInCompat>();
  std::string_view name;
  const uint8_t* value;
  size_t vlen;
  if (!req.String(0, &name) || !req.After(1, &value, &vlen) || vlen < in.size) return reply.Error(EINVAL);
  if (name.empty() || name.size() > XATTR_NAME_MAX) return reply.Error(ERANGE);
  if (in.size > kMaxXattrValue) return reply.Error(E2BIG);
  // Namespaces as tmpfs: user., trusted. and security.; no POSIX ACLs (system.), nothing bare.
  if (name.rfind("user.", 0) != 0 && name.rfind("trusted.", 0) != 0 && name.rfind("security.", 0) != 0)
    return reply.Error(EOPNOTSUPP);
  std::lock_guard lock(mu_);
  Inode* node = Get(req.nodeid());
  if (!node) return reply.Error(ENOENT);
  std::string key(name);
  auto found = node->xattrs.find(key);
  bool exists = found != node->xattrs.end();
  if ((in.flags & XATTR_CREATE) && exists) return reply.Error(EEXIST);
  if ((in.flags & XATTR_REPLACE) && !exists) return reply.Error(ENODATA);
  uint64_t before = exists ? key.size() + found->second.size() : 0, after = key.size() + in.size;
  if (after > before) {
    if (int e = ReserveMeta(after - before)) return reply.Error(e);
  }
  meta_bytes_ = meta_bytes_ - std::min(meta_bytes_, before) + after;
  node->xattrs[key] = std::string(reinterpret_cast<const char*>(value), in.size);
  node->ctime = Now();
  reply.Ok();
}

void Filesystem::OpGETXATTR(const Request& req, Reply& reply) {
  if (!opts_.xattrs) return reply.Error(ENOSYS);
  const auto& in = req.In<fuse_getxattr_in>();
  std::string_view name;
  if (!req.String(0, &name)) return reply.Error(EINVAL);
  std::lock_guard lock(mu_);
  Inode* node = Get(req.nodeid());
  if (!node) return reply.Error(ENOENT);
  auto it = node->xattrs.find(std::string(name));
  if (it == node->xattrs.end()) return reply.Error(ENODATA);
  if (in.size == 0) {
    fuse_getxattr_out out{};
    out.size = static_cast<uint32_t>(it->second.size());
    return reply.Ok(out);
  }
  if (it->second.size() > in.size) return reply.Error(ERANGE);
  reply.Bytes(it->second.data(), it->second.size());
}

void Filesystem::OpLISTXATTR(const Request& req, Reply& reply) {
  if (!opts_.xattrs) return reply.Error(ENOSYS);
  const auto& in = req.In<fuse_getxattr_in>();
  std::lock_guard lock(mu_);
  Inode* node = Get(req.nodeid());
  if (!node) return reply.Error(ENOENT);
  std::string names;
  for (auto& [k, v] : node->xattrs) names.append(k).push_back('\0');
  if (in.size == 0) {
    fuse_getxattr_out out{};
    out.size = static_cast<uint32_t>(names.size());
    return reply.Ok(out);
  }
  if (names.size() > in.size) return reply.Error(ERANGE);
  reply.Bytes(names.data(), names.size());
}

void Filesystem::OpREMOVEXATTR(const Request& req, Reply& reply) {
  if (!opts_.xattrs) return reply.Error(ENOSYS);
  std::string_view name;
  if (!req.String(0, &name)) return reply.Error(EINVAL);
  std::lock_guard lock(mu_);
  Inode* node = Get(req.nodeid());
  if (!node) return reply.Error(ENOENT);
  auto found = node->xattrs.find(std::string(name));
  if (found == node->xattrs.end()) return reply.Error(ENODATA);
  meta_bytes_ -= std::min<uint64_t>(meta_bytes_, found->first.size() + found->second.size());
  node->xattrs.erase(found);
  node->ctime = Now();
  reply.Ok();
}

// ---------------------------------------------------------------------------------------------
// Introspection for the control plane

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

void Filesystem::SetQuotas(uint64_t size_quota, uint64_t inode_quota) {
  std::lock_guard lock(mu_);
  opts_.size_quota = size_quota;
  opts_.inode_quota = inode_quota;
  if (journal_) JournalWriteQuota();
  SizeTiers();
}


// ---------------------------------------------------------------------------------------------
// Tiers: accounting, placement and moves

void Filesystem::Unaccount(Inode* in) {
  if (!in->data || !in->accounted_bytes) return;
  (in->data->tier == Tier::kMemory ? mem_bytes_ : disk_bytes_) -= in->accounted_bytes;
  in->accounted_bytes = 0;
}

void Filesystem::Account(Inode* in) {
  Unaccount(in);
  if (!in->data) return;
  struct stat st;
  if (in->data->Stat(&st) != 0) return;
  in->data->size = static_cast<uint64_t>(st.st_size);
  in->accounted_bytes = static_cast<uint64_t>(st.st_blocks) * 512;
  (in->data->tier == Tier::kMemory ? mem_bytes_ : disk_bytes_) += in->accounted_bytes;
}

void Filesystem::SetPlacement(PlacementRule r) {
  std::lock_guard lock(mu_);
  placement_ = r;
}

bool Filesystem::StillMapped(int fd) {
  // A write lease is granted only while no other open file of the inode exists (fs/locks.c,
  // check_conflicting_open: i_writecount and i_readcount must be ours alone). A closed FUSE file
  // still mapped keeps its passthrough backing file open in the mapping, so it shows here; and
  // a mapping can be made only through an OPEN, which bumps open_epoch, so checking at begin and
  // at commit (both under mu_) covers the whole move. The lease is dropped at once.
  if (fcntl(fd, F_SETLEASE, F_WRLCK) == 0) {
    fcntl(fd, F_SETLEASE, F_UNLCK);
    return false;
  }
  if (errno == EAGAIN || errno == EBUSY) return true;
  moves_unverified_.fetch_add(1);  // leases off (fs.leases-enable=0) or unsupported: cannot tell
  return false;
}

int Filesystem::PrepareMove(Inode* in, Tier to, PendingMove* mv) {
  if (!in || !in->data) return ENOENT;
  if (in->data->tier == to) return EALREADY;
  if (in->open_count > 0) return EBUSY;
  if (to == Tier::kDisk && !store_.has_disk_tier()) return ENOSPC;
  for (auto& [tok, other] : moves_)
    if (other.ino == in->ino) return EINPROGRESS;
  FdRef src;
  if (in->data->pinned) {
    src = in->data->pinned;  // a memfd: its own fd (no name to open read-only)
  } else if (int e = in->data->Open(O_RDONLY, &src)) {
    return e;
  }
  if (in->data->dirfd >= 0 && StillMapped(src->fd)) {
    moves_refused_mapped_.fetch_add(1);
    return EBUSY;
  }
  std::shared_ptr<FileData> target;
  if (int e = store_.NewFile(to, in->ino, in->generation, &target)) return e;
  FdRef dst;
  if (int e = target->Open(O_RDWR, &dst)) return e;
  struct stat st;
  if (fstat(src->fd, &st) != 0) return errno;
  mv->ino = in->ino;
  mv->generation = in->generation;
  mv->epoch = in->open_epoch;
  mv->source = in->data;
  mv->target = std::move(target);
  mv->src = std::move(src);
  mv->dst = std::move(dst);
  mv->size = static_cast<uint64_t>(st.st_size);
  return 0;
}

int Filesystem::FinishMove(Inode* in, PendingMove& mv) {
  // Only onto the inode the move started from: the same slot, generation and data (a file that
  // took a freed slot meanwhile, or one truncated and rewritten, is not this copy's).
  if (!in || !in->data || in->generation != mv.generation || in->data != mv.source) return ENOENT;
  if (in->open_count > 0 || in->open_epoch != mv.epoch) return EBUSY;  // opened meanwhile
  if (in->data->dirfd >= 0 && StillMapped(mv.src->fd)) {
    moves_refused_mapped_.fetch_add(1);
    return EBUSY;
  }
  struct stat old_st, new_st;
  if (fstat(mv.src->fd, &old_st) != 0 || fstat(mv.dst->fd, &new_st) != 0) return EIO;
  if (old_st.st_size != new_st.st_size) return EIO;  // a torn copy is never published
  // A range allocated with fallocate and never written is a hole to SEEK_DATA on both tiers (tmpfs:
  // not uptodate; ext4: unwritten), so the copy skipped it; the file keeps the room it reserved,
  // as on tmpfs. Done here for copies the daemon's own pages may pay for: to disk, or when no
  // container is attached (a promotion's helper runs in the container's cgroup and cannot).
  if (mv.target->tier == Tier::kDisk || charge_agent_.cgroup_dir.empty()) {
    for (auto& [start, end] : in->fallocated) {
      uint64_t stop = std::min<uint64_t>(end, static_cast<uint64_t>(old_st.st_size));
      if (stop > start) fallocate(mv.dst->fd, FALLOC_FL_KEEP_SIZE, static_cast<off_t>(start), static_cast<off_t>(stop - start));
    }
  }
  // The attributes come from the backing file: carry the times over, and remember the new
  // file's ctime so FillAttr keeps showing the inode's own ctime until data changes again.
  timespec times[2] = {old_st.st_atim, old_st.st_mtim};
  futimens(mv.dst->fd, times);
  if (Later(old_st.st_ctim, in->ctime)) in->ctime = old_st.st_ctim;
  fstat(mv.dst->fd, &new_st);
  in->data_ctime_base = new_st.st_ctim;
  Unaccount(in);
  if (mv.target->dirfd < 0) mv.target->pinned = mv.dst;  // a memfd keeps its fd
  in->data = std::move(mv.target);
  in->last_move_ms = NowMs();
  Account(in);
  return 0;  // the caller sizes the tiers once the source is unlinked (its pages still count until then)
}

int Filesystem::BeginMove(uint64_t ino, Tier to, MoveTicket* t) {
  std::unique_lock lock(mu_);
  // A file just closed is movable once its RELEASE has closed our fds too (else the lease check
  // would see them as a mapping); then looked up again, since mu_ was let go.
  if (Inode* in = Get(ino); in && in->open_count == 0 && in->data) AwaitCloses(lock, in->data);
  PendingMove mv;
  if (int e = PrepareMove(Get(ino), to, &mv)) return e;
  uint64_t token = next_move_token_++;
  t->token = token;
  t->ino = ino;
  t->src_fd = mv.src->fd;
  t->dst_fd = mv.dst->fd;
  t->size = mv.size;
  t->to = to;
  moves_[token] = std::move(mv);  // owns both fds until commit or abort
  SizeTiers();  // room on the target tier for the copy
  return 0;
}

int Filesystem::CommitMove(uint64_t token) {
  std::lock_guard lock(mu_);
  auto it = moves_.find(token);
  if (it == moves_.end()) return ENOENT;
  PendingMove mv = std::move(it->second);
  moves_.erase(it);
  int e = FinishMove(Get(mv.ino), mv);
  if (e == 0 && journal_) JournalWriteInode(mv.ino);
  // The file that lost (the source, or an abandoned copy) is unlinked before the tiers are sized,
  // so its room is not handed out while its pages still count on its file system.
  mv.source.reset(), mv.src.reset(), mv.target.reset(), mv.dst.reset();
  SizeTiers();
  return e;
}

void Filesystem::AbortMove(uint64_t token) {
  std::lock_guard lock(mu_);
  moves_.erase(token);
  SizeTiers();
}

namespace {
// Copies src → dst segment by segment (SEEK_DATA/SEEK_HOLE), so sparse files stay sparse.
int CopyData(int src, int dst, uint64_t size) {
  if (ftruncate(dst, static_cast<off_t>(size)) != 0) return errno;
  std::vector<uint8_t> buf(1 << 20);
  off_t pos = 0;
  while (pos < static_cast<off_t>(size)) {
    off_t data = lseek(src, pos, SEEK_DATA);
    if (data < 0) {
      if (errno == ENXIO) break;  // only a hole remains
      return errno;
    }
    off_t hole = lseek(src, data, SEEK_HOLE);
    if (hole < 0) return errno;
    // sendfile keeps the copy in the kernel (page to page); pread/pwrite is the fallback.
    if (lseek(dst, data, SEEK_SET) == data) {
      off_t in_off = data;
      while (in_off < hole) {
        ssize_t n = sendfile(dst, src, &in_off, static_cast<size_t>(std::min<off_t>(hole - in_off, 1 << 30)));
        if (n <= 0) break;
      }
      if (in_off >= hole) {
        pos = hole;
        continue;
      }
      data = in_off;
    }
    for (off_t off = data; off < hole;) {
      size_t want = static_cast<size_t>(std::min<off_t>(hole - off, static_cast<off_t>(buf.size())));
      ssize_t n = pread(src, buf.data(), want, off);
      if (n < 0) return errno;
      if (n == 0) break;
      for (ssize_t w = 0; w < n;) {
        ssize_t m = pwrite(dst, buf.data() + w, static_cast<size_t>(n - w), off + w);
        if (m < 0) return errno;
        w += m;
      }
      off += n;
    }
    pos = hole;
  }
  return 0;
}
}  // namespace

bool Filesystem::WritingMayMove(Inode* in, uint32_t flags) {
  return (flags & O_ACCMODE) != O_RDONLY && in->open_count == 0 && in->data && in->data->tier == Tier::kMemory &&
         store_.has_disk_tier();
}

int Filesystem::AdmitWrite(Inode* in) {
  // An OPEN for writing follows the rule a new file follows: growth while open cannot be seen
  // (passthrough) and an open file cannot be spilled, so the decision is made before answering.
  if (!store_.has_disk_tier()) return 0;
  uint64_t size = in->data->size;
  if (in->open_count > 0) {
    // Another handle has it open: it passed this check when it opened, and refusing a second
    // writer of an open log would break ordinary programs. Admitted; the first open's
    // reservation (every open memory-tier file counts at the hint) covers it.
    if (!ReopenFitsInMemory(in, size)) admitted_unmovable_.fetch_add(1);
    return 0;
  }
  if (ReopenFitsInMemory(in, size)) return 0;
  PendingMove mv;
  int e = PrepareMove(in, Tier::kDisk, &mv);
  if (e == EBUSY || e == EINPROGRESS) {
    // Mapped by a process (moving would strand its writes) or a promotion's copy is running:
    // admitted in memory, and counted, as tmpfs would hold it.
    admitted_unmovable_.fetch_add(1);
    return 0;
  }
  if (e) return e == ENOSPC ? ENOSPC : 0;
  // The copy runs under the lock: it happens once per file that outgrew memory (a log reopened
  // for appending moves on the first reopen that does not fit and stays on disk while written).
  // The disk tier gets the room for it first: the file is counted once, on the memory tier.
  inline_copy_[static_cast<int>(Tier::kDisk)] = in->accounted_bytes;
  SizeTiers();
  int c = CopyData(mv.src->fd, mv.dst->fd, mv.size);
  inline_copy_[static_cast<int>(Tier::kDisk)] = 0;
  if (c) {
    mv.target.reset();  // unlinks the partial copy
    SizeTiers();
    return c == ENOSPC ? ENOSPC : EIO;
  }
  int f = FinishMove(in, mv);
  mv.source.reset(), mv.src.reset(), mv.target.reset(), mv.dst.reset();  // as in CommitMove
  SizeTiers();
  if (f) return f == EBUSY ? 0 : EIO;
  demoted_at_open_.fetch_add(1);
  return 0;
}

int Filesystem::MoveNow(uint64_t ino, Tier to, uint64_t* bytes) {
  MoveTicket t;
  if (int e = BeginMove(ino, to, &t)) return e;
  // The pending move owns both fds until commit or abort: the copy runs without the lock.
  if (int e = CopyData(t.src_fd, t.dst_fd, t.size)) {
    AbortMove(t.token);
    return e;
  }
  if (to == Tier::kDisk) {
    // The copy's page cache was charged to the daemon, not to the container: left there, the
    // spilled file would be served from memory nobody's limit counts (measured: 2 x 128 MiB in a
    // 150 MiB cgroup ran 6 s against 28-42 s on a plain directory). Written back and dropped, its
    // pages are faulted in again by the function, charged to its own cgroup, as overlay's are.
    if (fdatasync(t.dst_fd) != 0) {
      int err = errno == ENOSPC ? ENOSPC : EIO;
      AbortMove(t.token);
      return err;
    }
    posix_fadvise(t.dst_fd, 0, 0, POSIX_FADV_DONTNEED);
  }
  int e = CommitMove(t.token);
  if (e == 0 && bytes) *bytes = t.size;
  return e;
}


void Filesystem::ReleaseStore() {
  std::lock_guard lock(mu_);
  moves_.clear();
  open_files_.clear();
  for (auto& slot : slots_) {
    if (!slot || !slot->data) continue;
    slot->backing.forget();  // the connection is gone, and its backing ids with it
    FdRef fd;
    // A disowned store's files belong to the next successor: never empty them.
    if (!store_.disowned() && slot->data->Open(O_RDWR, &fd) == 0) {
      if (ftruncate(fd->fd, 0) != 0) { /* unlinked below all the same */ }
    }
    slot->data->pinned.reset();
    Unaccount(slot.get());
    slot->data.reset();
  }
  store_.Release();
}

int Filesystem::SyncDiskTier() {
  int files = 0;
  {
    std::lock_guard lock(mu_);
    for (auto& slot : slots_)
      if (slot && slot->data && slot->data->tier == Tier::kDisk) files++;
  }
  store_.SyncDisk();  // outside the lock: the disk is slow, requests are not
  return files;
}

}  // namespace ephemera
