// The inode table: slots with generations, directory entries, attributes as replies carry them,
// and when an inode and its data are freed. Everything here requires mu_.
#include "fs_internal.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <algorithm>
#include <cerrno>
#include <cstring>
#include "journal.h"

namespace ephemera {

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

Inode* Filesystem::Get(uint64_t ino) {
  if (ino == 0 || ino >= slots_.size()) return nullptr;
  Inode* in = slots_[ino].get();
  if (in && journal_) JournalMark(ino);
  return in;
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

// The backing file of inode `ino`, held so the caller can do its I/O without the lock (a tier move
// swaps the inode's data, never the file under a reader). Requires mu_. 0, ENOENT, or `no_data`
// for an inode without data (a directory, a symlink, a fifo).
int Filesystem::DataOf(uint64_t ino, int no_data, FdRef* out) {
  Inode* node = Get(ino);
  if (!node) return ENOENT;
  if (!node->data) return no_data;
  return node->data->Open(O_RDWR, out);  // the handle's pinned fd: requests with a handle come here
}

}  // namespace ephemera
