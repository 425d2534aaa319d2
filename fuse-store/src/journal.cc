// The restart journal: what a successor needs to serve a killed daemon's connection.
//
// One append-only file per mount (on the state directory's tmpfs: a process crash, not a power
// cut, is what it must survive). Each changing request appends one batch, written before its
// reply leaves: the state of every inode it touched (whole records, so replay is "last one
// wins"), the directory entries it added or removed (with their readdir cookies), and the reply
// itself keyed by `unique`. A successor loads the last snapshot and the batches after it; a
// resent request (FUSE_UNIQUE_RESEND) whose reply is journaled gets that reply again, so a
// CREATE, MKDIR, UNLINK, RENAME or LINK the dead daemon applied is never applied twice, and one
// it had not journaled is applied now, once. Batches carry a CRC; a torn tail ends the load.
// The file is rewritten as one snapshot at takeover and whenever it grows past kCompactMinBytes
// and 4 snapshots.
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <deque>
#include <unordered_set>
#include "fs.h"
#include "journal.h"

namespace ephemera {

namespace {

constexpr uint32_t kBatchMagic = 0x314a4545u;  // "EEJ1"
constexpr uint32_t kJournalVersion = 1;
// The journal is rewritten as one snapshot once it passes max(1 MiB, 4 × the last snapshot): a
// successor reads at most ~5 snapshots' worth, and compaction costs O(table) per 3 tables written.
constexpr uint64_t kCompactMinBytes = 1ull << 20;
constexpr size_t kKeptReplies = 256;  // ≥ the requests a daemon can have read and not answered

enum Rec : uint8_t { kHeader = 1, kInit = 2, kQuota = 3, kInode = 4, kFree = 5, kDirAdd = 6, kDirDel = 7, kReply = 8, kAttempt = 9 };

thread_local bool t_track = false;
thread_local bool t_committed = false;
thread_local std::vector<uint64_t> t_dirty;
thread_local std::string t_records;

uint32_t Crc32(const uint8_t* p, size_t n) {
  static uint32_t table[256];
  static bool ready = [] {
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
      table[i] = c;
    }
    return true;
  }();
  (void)ready;
  uint32_t c = 0xffffffffu;
  for (size_t i = 0; i < n; ++i) c = table[(c ^ p[i]) & 0xff] ^ (c >> 8);
  return c ^ 0xffffffffu;
}

template <typename T>
void Put(std::string& b, T v) {
  b.append(reinterpret_cast<const char*>(&v), sizeof(T));
}
void PutStr(std::string& b, std::string_view s) {
  Put<uint32_t>(b, static_cast<uint32_t>(s.size()));
  b.append(s.data(), s.size());
}
void PutTime(std::string& b, const timespec& t) {
  Put<int64_t>(b, t.tv_sec);
  Put<int64_t>(b, t.tv_nsec);
}

struct Reader {
  const uint8_t* p;
  const uint8_t* end;
  bool ok = true;
  template <typename T>
  T Get() {
    T v{};
    if (end - p < static_cast<ptrdiff_t>(sizeof(T))) {
      ok = false;
      p = end;
      return v;
    }
    memcpy(&v, p, sizeof(T));
    p += sizeof(T);
    return v;
  }
  std::string Str() {
    uint32_t n = Get<uint32_t>();
    if (!ok || end - p < static_cast<ptrdiff_t>(n)) {
      ok = false;
      p = end;
      return {};
    }
    std::string s(reinterpret_cast<const char*>(p), n);
    p += n;
    return s;
  }
  timespec Time() {
    timespec t{};
    t.tv_sec = Get<int64_t>();
    t.tv_nsec = Get<int64_t>();
    return t;
  }
};

bool Journaled(uint32_t opcode) {
  switch (opcode) {
    // Requests that change nothing a successor needs (data goes to the backing file directly).
    case FUSE_GETATTR: case FUSE_READLINK: case FUSE_READ: case FUSE_WRITE: case FUSE_STATFS:
    case FUSE_FSYNC: case FUSE_GETXATTR: case FUSE_LISTXATTR: case FUSE_FLUSH: case FUSE_OPENDIR:
    case FUSE_READDIR: case FUSE_RELEASEDIR: case FUSE_FSYNCDIR: case FUSE_ACCESS: case FUSE_INTERRUPT:
    case FUSE_DESTROY: case FUSE_LSEEK: case FUSE_COPY_FILE_RANGE: case FUSE_SYNCFS:
      return false;
    default:
      return true;
  }
}

}  // namespace

int Filesystem::Journal::Append(const std::string& payload) {
  uint32_t head[3] = {kBatchMagic, static_cast<uint32_t>(payload.size()),
                      Crc32(reinterpret_cast<const uint8_t*>(payload.data()), payload.size())};
  iovec iov[2] = {{head, sizeof(head)}, {const_cast<char*>(payload.data()), payload.size()}};
  ssize_t n = writev(fd, iov, 2);
  if (n != static_cast<ssize_t>(sizeof(head) + payload.size())) return n < 0 ? errno : EIO;
  stats.bytes += sizeof(head) + payload.size();
  stats.batches++;
  return 0;
}

bool TestStopAt(const char* point, uint32_t opcode) {
  struct Stop {
    std::string point;
    uint32_t opcode = 0;
  };
  static const Stop stop = [] {
    Stop s;
    const char* v = getenv("EPHEMERA_TEST_STOP");
    std::string text = v ? v : "";
    auto colon = text.find(':');
    if (colon == std::string::npos) return s;
    std::string name = text.substr(colon + 1);
#define EPHEMERA_STOP_NAME(num, Name, Arg, Out) \
  if (name == #Name) s.opcode = num;
    EPHEMERA_OPCODES(EPHEMERA_STOP_NAME)
#undef EPHEMERA_STOP_NAME
    s.point = text.substr(0, colon);
    return s;
  }();
  if (stop.opcode == 0 || stop.opcode != opcode || stop.point != point) return false;
  raise(SIGKILL);
  return true;
}

JournalScope::JournalScope(Filesystem* fs, uint32_t opcode) {
  if (!fs || !Journaled(opcode)) return;
  fs_ = fs;
  t_track = true;
  t_committed = false;
  t_dirty.clear();
  t_records.clear();
}

JournalScope::~JournalScope() {
  if (!fs_) return;
  if (!t_committed) fs_->JournalCommit(0, nullptr, 0);  // no reply (FORGET) or none sent
  t_track = false;
}

namespace {
void PutInodeRecord(std::string& b, const Inode* in) {
  Put<uint8_t>(b, kInode);
  Put<uint64_t>(b, in->ino);
  Put<uint64_t>(b, in->generation);
  Put<uint32_t>(b, in->mode);
  Put<uint32_t>(b, in->uid);
  Put<uint32_t>(b, in->gid);
  Put<uint32_t>(b, in->rdev);
  Put<uint32_t>(b, in->nlink);
  Put<uint64_t>(b, in->nlookup);
  Put<uint32_t>(b, in->open_count);
  Put<int32_t>(b, in->backing.get());
  PutTime(b, in->atime);
  PutTime(b, in->mtime);
  PutTime(b, in->ctime);
  PutTime(b, in->data_ctime_base);
  Put<uint64_t>(b, in->dir ? in->dir->parent : 0);
  Put<uint64_t>(b, in->dir ? in->dir->next_cookie : 0);
  Put<uint8_t>(b, in->data ? 1 : 0);
  Put<uint8_t>(b, in->data ? static_cast<uint8_t>(in->data->tier) : 0);
  PutStr(b, in->data ? in->data->name : std::string());
  PutStr(b, in->link);
  Put<uint32_t>(b, static_cast<uint32_t>(in->xattrs.size()));
  for (auto& [k, v] : in->xattrs) PutStr(b, k), PutStr(b, v);
}

// INIT as negotiated: in the journal as it happens and in every snapshot (one encoding for both).
void PutInitRecord(std::string& b, uint32_t proto_minor, uint64_t kernel_flags, uint64_t flags, bool passthrough, bool writeback) {
  Put<uint8_t>(b, kInit);
  Put<uint32_t>(b, proto_minor);
  Put<uint64_t>(b, kernel_flags);
  Put<uint64_t>(b, flags);
  Put<uint8_t>(b, passthrough ? 1 : 0);
  Put<uint8_t>(b, writeback ? 1 : 0);
}

void PutQuotaRecord(std::string& b, uint64_t size_quota, uint64_t inode_quota) {
  Put<uint8_t>(b, kQuota);
  Put<uint64_t>(b, size_quota);
  Put<uint64_t>(b, inode_quota);
}
}  // namespace

void Filesystem::JournalMark(uint64_t ino) {
  if (t_track) t_dirty.push_back(ino);
}

void Filesystem::JournalDirent(bool add, uint64_t dir, uint64_t cookie, uint64_t ino, const std::string& name) {
  std::string local;
  std::string& b = t_track ? t_records : local;
  Put<uint8_t>(b, add ? kDirAdd : kDirDel);
  Put<uint64_t>(b, dir);
  if (add) Put<uint64_t>(b, cookie), Put<uint64_t>(b, ino);
  PutStr(b, name);
  if (!t_track) journal_->Append(local);  // outside a request (not expected): its own batch
}

void Filesystem::JournalInit(uint64_t kernel_flags, uint64_t flags) {
  kernel_has_resend_ = (kernel_flags & kInitHasResend) != 0;
  init_kernel_flags_ = kernel_flags;
  init_flags_ = flags;
  std::string local;
  std::string& b = t_track ? t_records : local;
  PutInitRecord(b, proto_minor_, kernel_flags, flags, passthrough_, writeback_);
  if (!t_track) journal_->Append(local);
}

void Filesystem::JournalCommit(uint64_t unique, const iovec* iov, int count) {
  std::lock_guard lock(mu_);
  if (t_committed || !journal_) return;
  t_committed = true;
  if (t_dirty.empty() && t_records.empty()) return;  // changed nothing: re-applying is harmless
  auto t0 = std::chrono::steady_clock::now();
  std::string& b = t_records;
  std::sort(t_dirty.begin(), t_dirty.end());
  t_dirty.erase(std::unique(t_dirty.begin(), t_dirty.end()), t_dirty.end());
  for (uint64_t ino : t_dirty) {
    Inode* in = ino < slots_.size() ? slots_[ino].get() : nullptr;
    if (in) {
      PutInodeRecord(b, in);
    } else {
      Put<uint8_t>(b, kFree);
      Put<uint64_t>(b, ino);
      Put<uint64_t>(b, ino < slot_generation_.size() ? slot_generation_[ino] : 0);
    }
  }
  if (unique && iov) {
    std::string bytes;
    for (int i = 0; i < count; ++i) bytes.append(static_cast<const char*>(iov[i].iov_base), iov[i].iov_len);
    Put<uint8_t>(b, kReply);
    Put<uint64_t>(b, unique & ~kUniqueResend);
    PutStr(b, bytes);
    journal_->replies.emplace_back(unique & ~kUniqueResend, std::move(bytes));
    if (journal_->replies.size() > kKeptReplies) journal_->replies.pop_front();
  }
  journal_->Append(b);
  t_records.clear();
  t_dirty.clear();
  if (journal_->stats.bytes > std::max(kCompactMinBytes, 4 * journal_->snapshot_bytes)) {
    std::string err;
    WriteSnapshot(&err);
    journal_->stats.compactions++;
  }
  journal_->stats.commit_ns +=
      static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count());
}

bool Filesystem::JournalReplay(uint64_t unique, ReplySink* sink) {
  std::string bytes;
  {
    std::lock_guard lock(mu_);
    uint64_t key = unique & ~kUniqueResend;
    for (auto it = journal_->replies.rbegin(); it != journal_->replies.rend(); ++it) {
      if (it->first == key) {
        bytes = it->second;
        break;
      }
    }
    if (bytes.size() < sizeof(fuse_out_header)) {
      journal_->stats.resends_applied++;
      return false;  // not journaled: the dead daemon never applied it; apply it now
    }
    journal_->stats.replies_replayed++;
  }
  auto* out = reinterpret_cast<fuse_out_header*>(bytes.data());
  out->unique = unique;  // the kernel finds the request by the unique it sent (bit 63 set)
  iovec iov{bytes.data(), bytes.size()};
  sink->Send(&iov, 1);
  return true;
}

bool Filesystem::JournalAttempt(uint64_t unique) {
  std::lock_guard lock(mu_);
  uint64_t key = unique & ~kUniqueResend;
  uint32_t seen = 0;
  for (auto& [u, n] : journal_->attempts)
    if (u == key) seen = std::max(seen, n);
  if (seen >= kResendAttempts) {
    journal_->stats.resends_refused++;
    return false;
  }
  journal_->attempts.emplace_back(key, seen + 1);
  if (journal_->attempts.size() > kKeptReplies) journal_->attempts.pop_front();
  std::string b;
  Put<uint8_t>(b, kAttempt);
  Put<uint64_t>(b, key);
  Put<uint32_t>(b, seen + 1);
  journal_->Append(b);  // before the request is applied: a successor it kills leaves the count behind
  return true;
}

void Filesystem::JournalWriteQuota() {
  std::string b;
  PutQuotaRecord(b, opts_.size_quota, opts_.inode_quota);
  journal_->Append(b);
}

void Filesystem::JournalWriteInode(uint64_t ino) {
  Inode* in = ino < slots_.size() ? slots_[ino].get() : nullptr;
  if (!in) return;
  std::string b;
  PutInodeRecord(b, in);
  journal_->Append(b);
}

Filesystem::JournalStats Filesystem::journal_stats() {
  std::lock_guard lock(mu_);
  return journal_ ? journal_->stats : JournalStats{};
}

int Filesystem::WriteSnapshot(std::string* err) {
  std::string b;
  Put<uint8_t>(b, kHeader);
  Put<uint32_t>(b, kJournalVersion);
  PutStr(b, store_.name());
  if (initialized_) PutInitRecord(b, proto_minor_, init_kernel_flags_, init_flags_, passthrough_, writeback_);
  PutQuotaRecord(b, opts_.size_quota, opts_.inode_quota);
  for (size_t ino = 1; ino < slots_.size(); ++ino) {
    if (slots_[ino]) {
      PutInodeRecord(b, slots_[ino].get());
    } else if (slot_generation_[ino]) {
      Put<uint8_t>(b, kFree);
      Put<uint64_t>(b, ino);
      Put<uint64_t>(b, slot_generation_[ino]);
    }
  }
  for (size_t ino = 1; ino < slots_.size(); ++ino) {
    Inode* in = slots_[ino].get();
    if (!in || !in->dir) continue;
    for (auto& [cookie, e] : in->dir->by_cookie) {
      Put<uint8_t>(b, kDirAdd);
      Put<uint64_t>(b, ino);
      Put<uint64_t>(b, cookie);
      Put<uint64_t>(b, e.ino);
      PutStr(b, e.name);
    }
  }
  for (auto& [unique, bytes] : journal_->replies) {
    Put<uint8_t>(b, kReply);
    Put<uint64_t>(b, unique);
    PutStr(b, bytes);
  }
  for (auto& [unique, n] : journal_->attempts) {
    Put<uint8_t>(b, kAttempt);
    Put<uint64_t>(b, unique);
    Put<uint32_t>(b, n);
  }
  std::string tmp = journal_->path + ".tmp";
  int fd = open(tmp.c_str(), O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0600);
  if (fd < 0) {
    *err = "cannot write the journal " + tmp + ": " + strerror(errno);
    return errno;
  }
  int old = journal_->fd;
  journal_->fd = fd;
  journal_->stats.bytes = 0;
  int e = journal_->Append(b);
  if (e == 0 && rename(tmp.c_str(), journal_->path.c_str()) != 0) e = errno;
  if (e) {
    *err = "cannot write the journal " + journal_->path + ": " + strerror(e);
    close(fd);
    journal_->fd = old;
    return e;
  }
  if (old >= 0) close(old);
  journal_->snapshot_bytes = journal_->stats.bytes;
  // Appends continue on the renamed file (O_APPEND is not needed: one writer, under mu_).
  lseek(fd, 0, SEEK_END);
  return 0;
}

int Filesystem::StartJournal(const std::string& path, std::string* err) {
  std::lock_guard lock(mu_);
  journal_ = std::make_unique<Journal>();
  journal_->path = path;
  int e = WriteSnapshot(err);
  if (e) journal_.reset();
  return e;
}

int Filesystem::AdoptJournal(const std::string& path, std::string* err) {
  std::lock_guard lock(mu_);
  int e = LoadJournal(path, err);
  if (e) {
    // Not ours after all: leave every file where it is for the next successor (the holder still
    // keeps the connection), and never unlink one when this table goes.
    store_.Disown();
    for (auto& slot : slots_)
      if (slot && slot->data) slot->data->name.clear();
  }
  return e;
}

int Filesystem::LoadJournal(const std::string& path, std::string* err) {
  auto t0 = std::chrono::steady_clock::now();
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    *err = "cannot read the journal " + path + ": " + strerror(errno);
    return errno;
  }
  std::string file;
  {
    struct stat st;
    fstat(fd, &st);
    file.resize(static_cast<size_t>(st.st_size));
    size_t got = 0;
    while (got < file.size()) {
      ssize_t n = read(fd, file.data() + got, file.size() - got);
      if (n <= 0) break;
      got += static_cast<size_t>(n);
    }
    file.resize(got);
    close(fd);
  }
  auto journal = std::make_unique<Journal>();
  journal->path = path;
  struct DataRef {
    Tier tier;
    std::string name;
  };
  std::unordered_map<uint64_t, DataRef> data_of;
  auto ensure = [&](uint64_t ino) -> Inode* {
    if (ino >= slots_.size()) slots_.resize(ino + 1), slot_generation_.resize(ino + 1, 0);
    if (!slots_[ino]) slots_[ino] = std::make_unique<Inode>(), slots_[ino]->ino = ino;
    return slots_[ino].get();
  };
  bool header = false, init = false;
  const auto* p = reinterpret_cast<const uint8_t*>(file.data());
  const auto* end = p + file.size();
  while (end - p >= 12) {
    uint32_t magic, len, crc;
    memcpy(&magic, p, 4), memcpy(&len, p + 4, 4), memcpy(&crc, p + 8, 4);
    if (magic != kBatchMagic || static_cast<size_t>(end - p - 12) < len || Crc32(p + 12, len) != crc) break;  // torn tail
    Reader r{p + 12, p + 12 + len};
    p += 12 + len;
    journal->stats.loaded_batches++;
    while (r.ok && r.p < r.end) {
      uint8_t type = r.Get<uint8_t>();
      switch (type) {
        case kHeader: {
          uint32_t version = r.Get<uint32_t>();
          std::string store = r.Str();
          if (version != kJournalVersion) {
            *err = "the journal " + path + " has state version " + std::to_string(version) + "; this build reads version " +
                   std::to_string(kJournalVersion);
            return EPROTO;
          }
          if (store != store_.name()) {
            *err = "the journal " + path + " belongs to store " + store + ", not " + store_.name();
            return EINVAL;
          }
          header = true;
          break;
        }
        case kInit: {
          proto_minor_ = r.Get<uint32_t>();
          init_kernel_flags_ = r.Get<uint64_t>();
          init_flags_ = r.Get<uint64_t>();
          passthrough_ = r.Get<uint8_t>() != 0;
          writeback_ = r.Get<uint8_t>() != 0;
          // Everything SetInitState derived from the offer and the agreement.
          kernel_has_resend_ = (init_kernel_flags_ & kInitHasResend) != 0;
          killpriv_v2_ = (init_flags_ & FUSE_HANDLE_KILLPRIV_V2) != 0;
          no_opendir_ = (init_kernel_flags_ & FUSE_NO_OPENDIR_SUPPORT) != 0;
          init = true;
          break;
        }
        case kQuota:
          opts_.size_quota = r.Get<uint64_t>();
          opts_.inode_quota = r.Get<uint64_t>();
          break;
        case kInode: {
          uint64_t ino = r.Get<uint64_t>();
          if (ino == 0 || ino > (1ull << 40)) {
            r.ok = false;
            break;
          }
          Inode* in = ensure(ino);
          in->generation = r.Get<uint64_t>();
          in->mode = r.Get<uint32_t>();
          in->uid = r.Get<uint32_t>();
          in->gid = r.Get<uint32_t>();
          in->rdev = r.Get<uint32_t>();
          in->nlink = r.Get<uint32_t>();
          in->nlookup = r.Get<uint64_t>();
          in->open_count = r.Get<uint32_t>();
          // A later record of the inode replaces the id unclosed: the connection holds what it says.
          in->backing.forget();
          in->backing = BackingId(&backing_, r.Get<int32_t>());
          in->atime = r.Time();
          in->mtime = r.Time();
          in->ctime = r.Time();
          in->data_ctime_base = r.Time();
          uint64_t parent = r.Get<uint64_t>(), next_cookie = r.Get<uint64_t>();
          bool has_data = r.Get<uint8_t>() != 0;
          Tier tier = static_cast<Tier>(r.Get<uint8_t>());
          std::string name = r.Str();
          in->link = r.Str();
          uint32_t nx = r.Get<uint32_t>();
          in->xattrs.clear();
          for (uint32_t i = 0; i < nx && r.ok; ++i) {
            std::string k = r.Str();
            in->xattrs[k] = r.Str();
          }
          if (S_ISDIR(in->mode)) {
            if (!in->dir) in->dir = std::make_unique<Directory>();
            in->dir->parent = parent;
            in->dir->next_cookie = std::max(in->dir->next_cookie, next_cookie);
          }
          if (has_data) data_of[ino] = DataRef{tier, std::move(name)};
          else data_of.erase(ino);
          slot_generation_[ino] = std::max(slot_generation_[ino], in->generation);
          break;
        }
        case kFree: {
          uint64_t ino = r.Get<uint64_t>(), gen = r.Get<uint64_t>();
          if (ino <= FUSE_ROOT_ID || ino > (1ull << 40)) break;
          if (ino >= slots_.size()) slots_.resize(ino + 1), slot_generation_.resize(ino + 1, 0);
          slots_[ino].reset();
          data_of.erase(ino);
          slot_generation_[ino] = std::max(slot_generation_[ino], gen);
          break;
        }
        case kDirAdd: {
          uint64_t dir = r.Get<uint64_t>(), cookie = r.Get<uint64_t>(), ino = r.Get<uint64_t>();
          std::string name = r.Str();
          Inode* d = dir < slots_.size() ? slots_[dir].get() : nullptr;
          if (!d || !d->dir) break;
          d->dir->Erase(name);
          d->dir->by_cookie[cookie] = Directory::Entry{name, ino};
          d->dir->cookie_of[name] = cookie;
          d->dir->next_cookie = std::max(d->dir->next_cookie, cookie + 1);
          break;
        }
        case kDirDel: {
          uint64_t dir = r.Get<uint64_t>();
          std::string name = r.Str();
          Inode* d = dir < slots_.size() ? slots_[dir].get() : nullptr;
          if (d && d->dir) d->dir->Erase(name);
          break;
        }
        case kReply: {
          uint64_t unique = r.Get<uint64_t>();
          std::string bytes = r.Str();
          journal->replies.emplace_back(unique, std::move(bytes));
          if (journal->replies.size() > kKeptReplies) journal->replies.pop_front();
          break;
        }
        case kAttempt: {
          uint64_t unique = r.Get<uint64_t>();
          uint32_t n = r.Get<uint32_t>();
          journal->attempts.emplace_back(unique, n);
          if (journal->attempts.size() > kKeptReplies) journal->attempts.pop_front();
          break;
        }
        default:
          r.ok = false;
      }
    }
    if (!r.ok) {
      *err = "the journal " + path + " holds a malformed record";
      return EPROTO;
    }
  }
  if (!header || !init) {
    *err = "the journal " + path + (header ? " records no INIT (the daemon died before the kernel's INIT)" : " has no header");
    return EPROTO;
  }
  // Rebuild what follows from the table.
  free_slots_.clear();
  open_files_.clear();
  live_inodes_ = extra_links_ = meta_bytes_ = 0;
  mem_bytes_ = disk_bytes_ = 0;
  std::unordered_set<std::string> names[2];
  uint64_t max_serial = 0;
  for (size_t ino = slots_.size(); ino-- > FUSE_ROOT_ID + 1;) {
    if (!slots_[ino]) free_slots_.push_back(ino);
  }
  for (size_t ino = FUSE_ROOT_ID; ino < slots_.size(); ++ino) {
    Inode* in = slots_[ino].get();
    if (!in) continue;
    live_inodes_++;
    if (!in->is_dir() && in->nlink > 1) extra_links_ += in->nlink - 1;
    meta_bytes_ += in->link.size();
    for (auto& [k, v] : in->xattrs) meta_bytes_ += k.size() + v.size();
    if (in->dir)
      for (auto& [c, e] : in->dir->by_cookie) meta_bytes_ += e.name.size();
    auto it = data_of.find(ino);
    if (it == data_of.end() || !in->is_reg()) continue;
    int dirfd = store_.dirfd(it->second.tier);
    if (dirfd < 0) {
      *err = std::string("the journal names a file on the ") + TierName(it->second.tier) + " tier, which this store lacks";
      return ENOENT;
    }
    names[static_cast<int>(it->second.tier)].insert(it->second.name);
    auto dot = it->second.name.rfind('.');
    if (dot != std::string::npos) max_serial = std::max<uint64_t>(max_serial, strtoull(it->second.name.c_str() + dot + 1, nullptr, 10));
    in->data = std::make_shared<FileData>(it->second.tier, dirfd, it->second.name);
    in->accounted_bytes = 0;
    Account(in);
    if (in->open_count > 0) {
      // The kernel still holds these handles (fh is the inode number): pin the backing file again.
      // Its passthrough id (in->backing) lives in the connection and stays valid.
      FdRef f;
      if (in->data->Open(O_RDWR, &f) == 0) in->data->pinned = std::move(f);
      open_files_.insert(in);
    }
  }
  // Backing files no inode names (a daemon killed between making a file and journaling it).
  for (int t = 0; t < 2; ++t) {
    int dirfd = store_.dirfd(static_cast<Tier>(t));
    if (dirfd < 0) continue;
    int dup_fd = dup(dirfd);
    DIR* d = dup_fd >= 0 ? fdopendir(dup_fd) : nullptr;
    if (!d) {
      if (dup_fd >= 0) close(dup_fd);
      continue;
    }
    rewinddir(d);
    std::vector<std::string> orphans;
    while (dirent* e = readdir(d)) {
      if (e->d_name[0] == '.') continue;
      if (!names[t].count(e->d_name)) orphans.emplace_back(e->d_name);
      const char* dot = strrchr(e->d_name, '.');
      if (dot) max_serial = std::max<uint64_t>(max_serial, strtoull(dot + 1, nullptr, 10));
    }
    closedir(d);
    for (auto& n : orphans) unlinkat(dirfd, n.c_str(), 0);
    journal->stats.orphans_removed += orphans.size();
  }
  store_.set_next_serial(max_serial + 1);
  initialized_ = true;
  journal_ = std::move(journal);
  journal_->stats.load_us =
      static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0).count());
  return WriteSnapshot(err);
}

}  // namespace ephemera
