// Operation handlers for directories (opendir, readdir, readdirplus), statfs, access and the
// extended attributes.
#include "fs_internal.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>
#include <algorithm>
#include <cerrno>
#include <cstring>

namespace ephemera {

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

}  // namespace ephemera
