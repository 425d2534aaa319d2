// The file system core: the inode table, directories and one handler per opcode. It sees
// requests as typed views and answers through Reply; it knows nothing of /dev/fuse, so unit tests
// drive it with bytes (Dispatch) and no mount. One class, one lock (mu_), its sources split by
// responsibility: fs.cc (construction, Dispatch, INIT, figures for the control plane),
// inode_table.cc, ops_names.cc / ops_files.cc / ops_dirs.cc (the handlers), admission.cc (quota and
// placement enforcement), tiers.cc (accounting and tier moves), charge.cc (the charge helper).
#pragma once
#include <sys/stat.h>
#include <atomic>
#include <condition_variable>
#include <functional>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>
#include "backing.h"
#include "opcodes.h"
#include "request.h"
#include "store.h"

namespace ephemera {

// FUSE_OVER_IO_URING (7.42, flags2 bit 9): requests travel through io_uring ring entries.
constexpr uint64_t kInitOverIoUring = 1ULL << 41;

struct Directory {
  struct Entry {
    std::string name;
    uint64_t ino;
  };
  uint64_t parent = 0;
  // Readdir offsets are insertion cookies, so a listing resumes correctly while entries come and go.
  std::map<uint64_t, Entry> by_cookie;
  std::unordered_map<std::string, uint64_t> cookie_of;
  uint64_t next_cookie = 3;  // 1 and 2 are "." and ".."

  uint64_t Find(const std::string& name) const;
  void Insert(const std::string& name, uint64_t ino);
  void Erase(const std::string& name);
  bool empty() const { return by_cookie.empty(); }
};

struct Inode {
  uint64_t ino = 0;
  uint64_t generation = 0;
  uint32_t mode = 0;
  uint32_t uid = 0, gid = 0, rdev = 0;
  uint32_t nlink = 0;
  timespec atime{}, mtime{}, ctime{};
  uint64_t nlookup = 0;      // kernel references (LOOKUP/CREATE/… minus FORGET)
  uint32_t open_count = 0;   // open handles (OPEN/CREATE minus RELEASE)
  BackingId backing;         // passthrough registration, held while open_count > 0
  std::shared_ptr<FileData> data;  // regular files
  std::unique_ptr<Directory> dir;  // directories
  std::string link;                // symlinks
  std::map<std::string, std::string> xattrs;
  int64_t last_open_ms = 0, last_close_ms = 0, last_move_ms = 0;
  uint64_t open_epoch = 0;        // bumped by every open: a tier move commits only if unchanged
  uint64_t accounted_bytes = 0;   // allocated bytes as of the last close/move (tier totals)
  timespec data_ctime_base{};     // the backing file's ctime right after a move (see FillAttr)
  // Ranges allocated by fallocate (start → end), punched holes and truncation taken out: a move
  // allocates them again on the target, which a copy of the data alone would not (requires mu_).
  std::map<uint64_t, uint64_t> fallocated;

  bool is_dir() const { return S_ISDIR(mode); }
  bool is_reg() const { return S_ISREG(mode); }
};

struct FsOptions {
  uint32_t root_mode = 01777;  // /tmp's mode
  uint32_t root_uid = 0, root_gid = 0;
  double entry_timeout_s = 3600;  // every change comes through this mount, so caching is safe
  double attr_timeout_s = 3600;
  bool answer_flush_enosys = true;  // nothing to do on flush: ENOSYS stops the kernel sending it
  // Without FUSE_HANDLE_KILLPRIV_V2 (no SB_NOSEC), extended attributes cost a GETXATTR round trip
  // on EVERY write(): the kernel asks for security.capability before each write (file_remove_privs),
  // which measured 0.11x tmpfs on 4 KiB random writes; with it, about once per file (S_NOSEC).
  // Off, every xattr op answers ENOSYS once and the kernel stops asking (no_getxattr): xattrs are
  // ENOTSUP everywhere, consistently.
  bool xattrs = false;
  // FUSE_HANDLE_KILLPRIV_V2: the kernel sets SB_NOSEC, so a passthrough write to a file without
  // setuid/setgid bits skips file_remove_privs after its first write, and the daemon clears the
  // bits itself (see KillSuidGid in fs.cc). Off only for A/B runs (EPHEMERA_KILLPRIV_V2=0).
  bool killpriv_v2 = true;
  std::string mode = "auto";        // auto | passthrough | writeback | none (unit tests)
  uint32_t max_write = 1 << 20;
  // Caps like a sized tmpfs's: bytes over both tiers, names and symlink targets included (tmpfs
  // counts them in its pages; here they sit on the daemon's heap); inodes, hard links included (as
  // tmpfs counts a link against nr_inodes). 0 = the tmpfs default: half of RAM, and half of RAM's
  // pages for inodes.
  uint64_t size_quota = 0;
  uint64_t inode_quota = 0;
};

struct OpCounters {
  std::atomic<uint64_t> count[kOpCount];
  std::atomic<uint64_t> errors[kOpCount];
  std::atomic<uint64_t> unanswered{0};  // replies sent by the Reply destructor (handler bug)
  std::atomic<uint64_t> exceptions{0};  // C++ exceptions caught at dispatch (answered EIO)
  std::atomic<uint64_t> malformed{0};   // too short / bad length / missing strings
  std::atomic<uint64_t> bad_replies{0}; // a reply whose size broke the opcode table's layout (sent EIO instead)
  OpCounters() {
    for (int i = 0; i < kOpCount; ++i) count[i] = 0, errors[i] = 0;
  }
};

// The memory tier's admission, enforced natively at CREATE and OPEN for writing (no JavaScript
// per operation). The numbers are decided in policy/tiers.ts (placementAdmission) and pushed by the
// tier keeper; nothing here decides where files should go, only whether one fits.
struct PlacementRule {
  // An allocating fallocate on the memory tier past this is ENOSPC (an open file's pages cannot
  // be spilled).
  uint64_t memory_budget = UINT64_MAX;
  // The room new (and reopened-for-writing) files may take in memory: a new file goes there only if
  // the memory tier, every open memory-tier file at the reserve and the file at the reserve fit in
  // it; with no reserve, while the memory tier holds less than it. 0: every new file on disk.
  uint64_t new_file_room = UINT64_MAX;
  // What a file may grow to while open (the profile's largest file × the safety factor). 0: no hint.
  uint64_t reserve_per_open_file = 0;
};

// A move's fds stay open, owned by the pending move, from BeginMove until Commit or Abort, so the
// numbers handed to a copy helper cannot be closed and reused meanwhile.
struct MoveTicket {
  uint64_t token = 0;
  uint64_t ino = 0;
  int src_fd = -1;
  int dst_fd = -1;
  uint64_t size = 0;
  Tier to = Tier::kMemory;
};

struct InodeStat {
  uint64_t ino;
  uint64_t generation;
  Tier tier;
  uint64_t size;
  uint64_t allocated;
  uint32_t open_count;
  int64_t last_open_ms, last_close_ms, last_move_ms;
};

class Filesystem {
 public:
  Filesystem(FsOptions opts, StoreOptions store_opts);
  ~Filesystem();

  // Parses one request (header + body as read from /dev/fuse) and answers it through `sink`.
  // Never throws; every request that expects a reply gets exactly one.
  void Dispatch(const uint8_t* buf, size_t len, ReplySink* sink);

  void set_backing_registry(BackingRegistry* r) { backing_ = r; }
  bool initialized() const { return initialized_.load(); }
  bool passthrough() const { return passthrough_.load(); }
  bool writeback() const { return writeback_.load(); }
  uint32_t proto_minor() const { return proto_minor_; }
  uint32_t max_write() const { return opts_.max_write; }
  // Set by the transport before mounting once its io_uring queues are prepared: INIT then asks
  // for FUSE_OVER_IO_URING when the kernel offers it, and uring() says whether it was agreed.
  void set_want_uring(bool v) { want_uring_ = v; }
  bool uring() const { return uring_.load(); }
  bool killpriv_v2() const { return killpriv_v2_.load(); }
  const OpCounters& counters() const { return counters_; }
  std::vector<InodeStat> InodeStats();
  struct Usage {
    uint64_t inodes = 0, files = 0, bytes_memory = 0, bytes_disk = 0, open_files = 0;
    uint64_t links = 0;         // hard links beyond each file's first name (count as inodes)
    uint64_t name_bytes = 0;    // names, symlink targets and xattrs held on the daemon's heap
    uint64_t size_quota = 0, inode_quota = 0;  // in force (defaults resolved)
    uint64_t files_memory = 0, files_disk = 0, open_memory = 0, open_disk = 0;
    uint64_t moves_refused_mapped = 0;  // a process still mapped the file
    uint64_t demoted_at_open = 0;       // memory-tier files moved to disk before an OPEN for writing
    uint64_t admitted_unmovable = 0;    // such opens admitted in memory: another handle or a mapping held the file
    uint64_t moves_unverified = 0;      // the mapping check could not run (no leases here)
    uint64_t fallocate_timeouts = 0;
  };
  Usage GetUsage();
  void SetQuotas(uint64_t size_quota, uint64_t inode_quota);
  void SetPlacement(PlacementRule r);
  // Tier moves, for inodes with no open handle. Begin creates the target file and hands out both
  // fds (a promotion's copy runs in a helper inside the container's cgroup, so the pages are
  // charged there); Commit swaps the data only if nobody opened the inode meanwhile (an open in
  // between sees the old tier, and the move is abandoned: never a half copy).
  int BeginMove(uint64_t ino, Tier to, MoveTicket* ticket);
  int CommitMove(uint64_t token);
  void AbortMove(uint64_t token);
  // Begin + an in-process copy (holes preserved) + Commit. For spills: the daemon's page cache of
  // a disk file is reclaimable, so charging it to the daemon holds no memory hostage.
  int MoveNow(uint64_t ino, Tier to, uint64_t* bytes);
  // Writes back the disk tier's dirty pages. They are charged to the container that wrote them and
  // cgroup v1 refuses to lower a limit below them until they are clean (then they are reclaimable).
  // Returns the number of files synced.
  int SyncDiskTier();
  // The mount is gone (the transport stopped): every file's data is freed now, not when the
  // session is garbage-collected. Each backing file is truncated before it is unlinked, so its
  // pages (shmem on the memory tier, page cache on the disk tier, both charged to the container
  // that wrote them) go at once even where a process still holds it open; then the store's
  // directories are removed. Later requests find no inode but the root.
  void ReleaseStore();
  // The init error of the store (a tier directory that could not be prepared), 0 if none.
  int store_error(std::string* what) const { return store_.init_error(what); }
  // Called after the last close of a regular file (ino, allocated bytes, tier).
  void set_on_close(std::function<void(uint64_t, uint64_t, Tier)> f) { on_close_ = std::move(f); }
  uint64_t tier_bytes(Tier t) const { return t == Tier::kMemory ? mem_bytes_.load() : disk_bytes_.load(); }
  // Where an allocating fallocate on the memory tier runs: a short-lived charged-copy helper that
  // joins the container's cgroup first, so the new pages are charged to the container and not to
  // the daemon (a page's charge follows the mm that allocates it). Empty cgroup_dir: the daemon
  // allocates, as before a container is attached.
  struct ChargeAgent {
    std::string helper;
    std::string cgroup_dir;
  };
  void SetChargeAgent(ChargeAgent a);
  // Allocating fallocates the daemon did itself although a container was attached (the helper
  // could not run or join the cgroup): memory charged to the daemon, visible in metrics.
  uint64_t uncharged_fallocates() const { return uncharged_fallocates_.load(); }
  // Opens under passthrough whose backing file the kernel refused (served through the daemon under
  // mode auto, failed with EIO under mode passthrough).
  uint64_t backing_open_failures() const { return backing_open_failures_.load(); }
  // Called once INIT is answered (the transport resolves the mount's ready promise).
  void set_on_init(std::function<void()> f) { on_init_ = std::move(f); }

  // Restartable mounts (journal.cc). The journal holds the inode table, the negotiated INIT, the
  // quotas and the replies to recent changing requests, so a successor that receives the
  // connection from the holder resumes where a killed daemon stopped.
  // Starts a fresh journal at `path` (a snapshot of the table as it is). 0 or errno.
  int StartJournal(const std::string& path, std::string* err);
  // Loads a dead daemon's journal (it must name this store's directory), then continues it with
  // a fresh snapshot. After it the file system is initialized: no second INIT comes. 0 or errno.
  int AdoptJournal(const std::string& path, std::string* err);
  // The kernel offered FUSE_HAS_RESEND in INIT (recorded, so a successor knows).
  bool kernel_has_resend() const { return kernel_has_resend_; }
  const std::vector<int>& store_lock_fds() const { return store_.lock_fds(); }
  const std::string& store_name() const { return store_.name(); }
  struct JournalStats {
    uint64_t bytes = 0, batches = 0, loaded_batches = 0, load_us = 0, replies_replayed = 0, resends_applied = 0;
    uint64_t orphans_removed = 0;
    uint64_t compactions = 0;
    uint64_t resends_refused = 0;  // answered EIO: resent to kResendAttempts successors that died
    uint64_t commit_ns = 0;  // time spent serializing and writing batches (the per-op cost)
  };
  JournalStats journal_stats();

 private:
  struct Journal;
  friend struct JournalScope;
  friend class JournalSink;
  void JournalMark(uint64_t ino);  // the op changes this inode (requires mu_)
  void JournalDirent(bool add, uint64_t dir, uint64_t cookie, uint64_t ino, const std::string& name);  // requires mu_
  void JournalInit(uint64_t kernel_flags, uint64_t flags);  // requires mu_ or INIT
  // Writes the op's records (and its reply, keyed by unique) before the reply leaves.
  void JournalCommit(uint64_t unique, const iovec* iov, int count);
  // A resent request whose reply the journal holds: send that reply again. True if handled.
  bool JournalReplay(uint64_t unique, ReplySink* sink);
  // Counts a resent request handed to this successor (journaled before it is applied); false when
  // kResendAttempts successors already got it and died: it is answered EIO instead.
  bool JournalAttempt(uint64_t unique);
  void JournalWriteQuota();   // requires mu_
  void JournalWriteInode(uint64_t ino);  // one batch with one inode's state (requires mu_)
  int WriteSnapshot(std::string* err);   // requires mu_
  int LoadJournal(const std::string& path, std::string* err);  // AdoptJournal's work (requires mu_)
  std::unique_ptr<Journal> journal_;
  bool kernel_has_resend_ = false;
  uint64_t init_kernel_flags_ = 0, init_flags_ = 0;  // INIT as offered and as agreed (journaled)
  // The operation handlers: ops_names.cc (names and attributes), ops_files.cc (regular files),
  // ops_dirs.cc (directories, statfs, xattrs); INIT, DESTROY and INTERRUPT in fs.cc.
#define EPHEMERA_DECLARE_HANDLER(num, Name, Arg, Out) void Op##Name(const Request& req, Reply& reply);
  EPHEMERA_OPCODES(EPHEMERA_DECLARE_HANDLER)
#undef EPHEMERA_DECLARE_HANDLER
  void SetInitState(const fuse_init_in& in, abi::InitOut* out);
  // `opened` (regular files): the new backing file's fd, for CREATE's handle.
  int MakeNode(const Request& req, uint64_t parent, std::string_view name, uint32_t mode, uint32_t rdev,
               const std::string* link, Inode** out, FdRef* opened = nullptr);
  int DoRename(uint64_t olddir, std::string_view oldname, uint64_t newdir, std::string_view newname, uint32_t flags);
  // `created`: an fd of in->data as it is now (a CREATE's new file), pinned instead of opening
  // another unless admission moved the file meanwhile.
  int OpenRegular(Inode* in, uint32_t flags, abi::OpenOut* out, FdRef created = nullptr);
  // Waits (mu_ released meanwhile, so the caller looks its inode up again) until the closes a
  // RELEASE left pending on `data` are done; false when none were pending. `lock` holds mu_ once.
  bool AwaitCloses(std::unique_lock<std::recursive_mutex>& lock, const std::shared_ptr<FileData>& data);
  // Drops the setuid/setgid bits (and security.capability) a write, truncate or chown drops, as
  // the VFS does for tmpfs; `privileged`: the caller may keep S_ISGID (requires mu_).
  void KillSuidGid(const Request& req, Inode* in, const timespec& now, bool privileged);
  void ReadDir(const Request& req, Reply& reply, bool plus);

  // The inode table (inode_table.cc); all require mu_.
  Inode* Get(uint64_t ino);
  Inode* NewInode(uint32_t mode, uint32_t uid, uint32_t gid);
  void MaybeFree(Inode* in);
  void FillAttr(Inode* in, fuse_attr* attr);
  void FillEntry(Inode* in, fuse_entry_out* out);
  void ReplyEntry(Inode* in, Reply& reply);
  int CheckName(std::string_view name) const;
  int ResolveEntry(const Request& req, std::string* key, Inode** dir, Inode** child);
  int DataOf(uint64_t ino, int no_data, FdRef* out);
  void AddEntry(Inode* dir, const std::string& name, uint64_t ino);
  void RemoveEntry(Inode* dir, const std::string& name);

  // Admission: quotas and placement (admission.cc).
  uint64_t SizeQuota() const;
  uint64_t InodeQuota() const;
  int ReserveInode() const;  // ENOSPC when the inode quota is reached (requires mu_)
  // ENOSPC when `bytes` more of names/targets would pass the size quota (requires mu_).
  int ReserveMeta(uint64_t bytes);
  uint64_t BytesUsed();  // requires mu_
  // The one admission point for bytes the kernel writes without asking us (passthrough): gives each
  // sized tier's file system the room left under the size quota over both tiers (names included),
  // plus, on a move's target tier, what the move's copy still has to write, so a file moving is
  // counted once while both copies exist. Called wherever the bytes held or the quota change: create,
  // open, last close, truncate, fallocate, unlink, moves, set-quotas (requires mu_).
  void SizeTiers();
  // Tier totals now: closed files as last accounted, open ones from their backing file (requires mu_).
  void LiveTierBytes(uint64_t* memory, uint64_t* disk);
  // Whether a new file fits on the memory tier under the placement rule (requires mu_).
  bool NewFileFitsInMemory();
  // Whether `in`, opened for writing, may stay on the memory tier under the same rule, its own
  // bytes set aside (requires mu_).
  bool ReopenFitsInMemory(Inode* in, uint64_t size);
  // An open with `flags` on `in` is one AdmitWrite may answer by moving it to disk (requires mu_).
  bool WritingMayMove(Inode* in, uint32_t flags);
  // Admission at OPEN for writing: a memory-tier file that no longer fits goes to disk first.
  int AdmitWrite(Inode* in);  // requires mu_

  // Tiers and moves (tiers.cc).
  struct PendingMove;
  // Starts a move of `in` (closed, not mapped) to `to`: opens the source read-only and makes the
  // target (requires mu_).
  int PrepareMove(Inode* in, Tier to, PendingMove* mv);
  // Publishes a finished copy onto the inode it started from (requires mu_).
  int FinishMove(Inode* in, PendingMove& mv);
  // Whether a process still maps (or holds open) the backing file behind `fd` (opened read-only
  // by us): a write lease is refused while any other open file of the inode exists, and a
  // mapping holds one. Requires mu_, so no OPEN of ours runs meanwhile.
  bool StillMapped(int fd);
  // Records a served fallocate on `ino`, if `fd` is still its data (requires mu_).
  void NoteFallocate(uint64_t ino, const FdRef& fd, uint32_t mode, uint64_t offset, uint64_t length);
  void ClipFallocated(Inode* in, uint64_t size);  // a truncate to `size` (requires mu_)

  FsOptions opts_;
  Store store_;
  BackingRegistry* backing_ = nullptr;  // every BackingId closes through this slot (backing.h)
  // Recursive: a journaled reply is written from Reply::Send, which handlers call with mu_ held.
  std::recursive_mutex mu_;
  std::condition_variable_any closes_done_;  // with mu_: a RELEASE finished the closes it left pending
  std::atomic<int> close_waiters_{0};
  unsigned release_close_delay_us_ = 0;  // EPHEMERA_TEST_RELEASE_DELAY_US
  std::vector<std::unique_ptr<Inode>> slots_;
  std::vector<uint64_t> free_slots_;
  std::vector<uint64_t> slot_generation_;
  uint64_t live_inodes_ = 0;
  uint64_t extra_links_ = 0;  // nlink - 1 summed over non-directories (requires mu_)
  uint64_t meta_bytes_ = 0;   // names + symlink targets + xattrs (requires mu_)
  uint64_t default_size_quota_ = 0, default_inode_quota_ = 0;
  std::atomic<uint64_t> moves_refused_mapped_{0}, demoted_at_open_{0}, admitted_unmovable_{0}, moves_unverified_{0},
      fallocate_timeouts_{0};
  OpCounters counters_;
  std::atomic<bool> initialized_{false};
  std::atomic<bool> passthrough_{false};
  std::atomic<bool> writeback_{false};
  std::atomic<bool> want_uring_{false};
  std::atomic<bool> uring_{false};
  std::atomic<bool> killpriv_v2_{false};  // FUSE_HANDLE_KILLPRIV_V2 agreed at INIT
  std::atomic<bool> no_opendir_{false};   // the kernel takes ENOSYS to OPENDIR as "never send it"
  uint32_t proto_minor_ = 0;
  std::function<void()> on_init_;
  std::function<void(uint64_t, uint64_t, Tier)> on_close_;
  PlacementRule placement_;
  ChargeAgent charge_agent_;  // requires mu_
  std::atomic<uint64_t> uncharged_fallocates_{0};
  std::atomic<uint64_t> backing_open_failures_{0};
  std::atomic<uint64_t> mem_bytes_{0}, disk_bytes_{0};
  // Regular files with an open handle (requires mu_). A closed file cannot change without a
  // request we see (SETATTR re-accounts it), so only these need an fstat: usage and quota checks
  // cost O(open files), not one syscall per file under the lock.
  std::unordered_set<Inode*> open_files_;
  void Account(Inode* in);  // refresh in->accounted_bytes and the tier totals (requires mu_)
  void Unaccount(Inode* in);
  struct PendingMove {
    uint64_t ino = 0, generation = 0, epoch = 0;
    std::shared_ptr<FileData> source, target;
    FdRef src, dst;
    uint64_t size = 0;
  };
  std::unordered_map<uint64_t, PendingMove> moves_;
  uint64_t inline_copy_[2] = {0, 0};  // bytes a copy under mu_ (AdmitWrite) still has to write, per target tier
  uint64_t next_move_token_ = 1;
};

int64_t NowMs();

}  // namespace ephemera
