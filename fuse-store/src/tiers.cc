// Tiers: per-inode accounting of allocated bytes, tier moves (begin / commit / abort, and the
// in-process copy), the fallocated ranges a move allocates again, and the store's release.
#include "fs_internal.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <unistd.h>
#include <algorithm>
#include <cerrno>
#include <cstring>
#include "journal.h"

namespace ephemera {

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
