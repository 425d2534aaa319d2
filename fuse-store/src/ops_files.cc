// Operation handlers for regular files: open and create (with the passthrough registration),
// release, read, write, fallocate, lseek and copy_file_range; and the setuid/setgid clearing a
// write, truncate or chown does.
#include "fs_internal.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/stat.h>
#include <unistd.h>
#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include "errno_names.h"

namespace ephemera {

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

}  // namespace ephemera
