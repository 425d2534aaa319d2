// Operation handlers for names and attributes: lookup, forget, getattr/setattr, making nodes,
// links, unlink, rmdir and rename.
#include "fs_internal.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>

namespace ephemera {

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

}  // namespace ephemera
