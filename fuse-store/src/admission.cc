// Admission: the size and inode quotas and the memory tier's placement rule, enforced where bytes
// and inodes are taken (no JavaScript per operation); and the room each tier's own file system is
// given under the quota (SizeTiers). Everything here requires mu_ unless it takes it.
#include "fs_internal.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <algorithm>
#include <cerrno>
#include <cstring>
#include "journal.h"

namespace ephemera {

uint64_t Filesystem::SizeQuota() const { return opts_.size_quota ? opts_.size_quota : default_size_quota_; }

uint64_t Filesystem::InodeQuota() const { return opts_.inode_quota ? opts_.inode_quota : default_inode_quota_; }

int Filesystem::ReserveInode() const {
  if (live_inodes_ + extra_links_ >= InodeQuota()) return ENOSPC;
  return 0;
}

int Filesystem::ReserveMeta(uint64_t bytes) {
  if (BytesUsed() + bytes > SizeQuota()) return ENOSPC;
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

void Filesystem::SetQuotas(uint64_t size_quota, uint64_t inode_quota) {
  std::lock_guard lock(mu_);
  opts_.size_quota = size_quota;
  opts_.inode_quota = inode_quota;
  if (journal_) JournalWriteQuota();
  SizeTiers();
}

void Filesystem::SetPlacement(PlacementRule r) {
  std::lock_guard lock(mu_);
  placement_ = r;
}

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

}  // namespace ephemera
