// Synchronous wrappers over the syscalls Node's fs lacks, for the conformance and model tests.
// They fail the way Node's fs fails: a JS Error whose `code` is the errno name (EEXIST, ENOTSUP…),
// with `errno` (negative, as in Node), `syscall` and `path`, so tests assert on one field
// whichever API produced the error.
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "addon.h"
#include "errno_names.h"

namespace ephemera {
namespace {


[[noreturn]] void ThrowErrno(Napi::Env env, int err, const char* syscall, const std::string& path = "") {
  std::string code = ErrnoCode(err);
  std::string message = code + ": " + strerror(err) + ", " + syscall;
  if (!path.empty()) message += " '" + path + "'";
  Napi::Error error = Napi::Error::New(env, message);
  error.Set("code", Napi::String::New(env, code));
  error.Set("errno", Napi::Number::New(env, -err));
  error.Set("syscall", Napi::String::New(env, syscall));
  if (!path.empty()) error.Set("path", Napi::String::New(env, path));
  throw error;
}

// Argument mistakes are the caller's bug, not a file-system result, so they get a code no errno
// name can collide with.
[[noreturn]] void ThrowBadArgument(Napi::Env env, const std::string& message) {
  Napi::TypeError error = Napi::TypeError::New(env, message);
  error.Set("code", Napi::String::New(env, "E_BAD_ARGUMENT"));
  throw error;
}

void RequireArgs(const Napi::CallbackInfo& info, size_t count, const char* signature) {
  if (info.Length() < count) ThrowBadArgument(info.Env(), std::string("expected ") + signature);
}

std::string PathArg(const Napi::CallbackInfo& info, size_t index, const char* name) {
  if (!info[index].IsString()) ThrowBadArgument(info.Env(), std::string(name) + " must be a string");
  std::string path = info[index].As<Napi::String>().Utf8Value();
  if (path.find('\0') != std::string::npos) ThrowBadArgument(info.Env(), std::string(name) + " contains a NUL byte");
  return path;
}

int64_t IntegerArg(const Napi::CallbackInfo& info, size_t index, const char* name, int64_t min = INT64_MIN) {
  if (!info[index].IsNumber()) ThrowBadArgument(info.Env(), std::string(name) + " must be a number");
  double value = info[index].As<Napi::Number>().DoubleValue();
  if (!std::isfinite(value) || std::trunc(value) != value || std::fabs(value) > kMaxSafeInteger) {
    ThrowBadArgument(info.Env(), std::string(name) + " must be a safe integer");
  }
  if (value < static_cast<double>(min)) {
    ThrowBadArgument(info.Env(), std::string(name) + " must be >= " + std::to_string(min));
  }
  return static_cast<int64_t>(value);
}

int FdArg(const Napi::CallbackInfo& info, size_t index, const char* name) {
  int64_t fd = IntegerArg(info, index, name, 0);
  if (fd > INT32_MAX) ThrowBadArgument(info.Env(), std::string(name) + " is not a file descriptor");
  return static_cast<int>(fd);
}

// Buffer, Uint8Array or string (UTF-8) → bytes.
std::string BytesArg(const Napi::CallbackInfo& info, size_t index, const char* name) {
  Napi::Value value = info[index];
  if (value.IsString()) return value.As<Napi::String>().Utf8Value();
  if (value.IsTypedArray()) {
    Napi::TypedArray typed = value.As<Napi::TypedArray>();
    if (typed.TypedArrayType() == napi_uint8_array) {
      Napi::Uint8Array bytes = value.As<Napi::Uint8Array>();
      return std::string(reinterpret_cast<const char*>(bytes.Data()), bytes.ByteLength());
    }
  }
  ThrowBadArgument(info.Env(), std::string(name) + " must be a Buffer, Uint8Array or string");
}

Napi::Value Renameat2(const Napi::CallbackInfo& info) {
  RequireArgs(info, 3, "renameat2(oldPath, newPath, flags)");
  std::string from = PathArg(info, 0, "oldPath");
  std::string to = PathArg(info, 1, "newPath");
  unsigned flags = static_cast<unsigned>(IntegerArg(info, 2, "flags", 0));
  if (renameat2(AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), flags) != 0) {
    ThrowErrno(info.Env(), errno, "renameat2", from);
  }
  return info.Env().Undefined();
}

Napi::Value Fallocate(const Napi::CallbackInfo& info) {
  RequireArgs(info, 4, "fallocate(fd, mode, offset, len)");
  int fd = FdArg(info, 0, "fd");
  int mode = static_cast<int>(IntegerArg(info, 1, "mode", 0));
  int64_t offset = IntegerArg(info, 2, "offset");
  int64_t len = IntegerArg(info, 3, "len");
  if (fallocate(fd, mode, offset, len) != 0) ThrowErrno(info.Env(), errno, "fallocate");
  return info.Env().Undefined();
}

Napi::Value Lseek(const Napi::CallbackInfo& info) {
  RequireArgs(info, 3, "lseek(fd, offset, whence)");
  int fd = FdArg(info, 0, "fd");
  int64_t offset = IntegerArg(info, 1, "offset");
  int whence = static_cast<int>(IntegerArg(info, 2, "whence", 0));
  off_t result = lseek(fd, offset, whence);
  if (result < 0) ThrowErrno(info.Env(), errno, "lseek");
  return Napi::Number::New(info.Env(), static_cast<double>(result));
}

// Offsets may be null: then the kernel uses and advances the descriptor's own file offset.
Napi::Value CopyFileRange(const Napi::CallbackInfo& info) {
  RequireArgs(info, 5, "copyFileRange(fdIn, offIn|null, fdOut, offOut|null, len)");
  int fd_in = FdArg(info, 0, "fdIn");
  int fd_out = FdArg(info, 2, "fdOut");
  loff_t off_in = 0, off_out = 0;
  loff_t* off_in_ptr = nullptr;
  loff_t* off_out_ptr = nullptr;
  if (!info[1].IsNull() && !info[1].IsUndefined()) {
    off_in = IntegerArg(info, 1, "offIn", 0);
    off_in_ptr = &off_in;
  }
  if (!info[3].IsNull() && !info[3].IsUndefined()) {
    off_out = IntegerArg(info, 3, "offOut", 0);
    off_out_ptr = &off_out;
  }
  int64_t len = IntegerArg(info, 4, "len", 0);
  ssize_t copied = copy_file_range(fd_in, off_in_ptr, fd_out, off_out_ptr, static_cast<size_t>(len), 0);
  if (copied < 0) ThrowErrno(info.Env(), errno, "copy_file_range");
  return Napi::Number::New(info.Env(), static_cast<double>(copied));
}

Napi::Value Mknod(const Napi::CallbackInfo& info) {
  RequireArgs(info, 3, "mknod(path, mode, dev)");
  std::string path = PathArg(info, 0, "path");
  mode_t mode = static_cast<mode_t>(IntegerArg(info, 1, "mode", 0));
  dev_t dev = static_cast<dev_t>(IntegerArg(info, 2, "dev", 0));
  if (mknod(path.c_str(), mode, dev) != 0) ThrowErrno(info.Env(), errno, "mknod", path);
  return info.Env().Undefined();
}

Napi::Value Setxattr(const Napi::CallbackInfo& info) {
  RequireArgs(info, 3, "setxattr(path, name, value, flags?)");
  std::string path = PathArg(info, 0, "path");
  std::string name = PathArg(info, 1, "name");
  std::string value = BytesArg(info, 2, "value");
  int flags = info.Length() > 3 && !info[3].IsUndefined() ? static_cast<int>(IntegerArg(info, 3, "flags", 0)) : 0;
  if (setxattr(path.c_str(), name.c_str(), value.data(), value.size(), flags) != 0) {
    ThrowErrno(info.Env(), errno, "setxattr", path);
  }
  return info.Env().Undefined();
}

// Size query then read; retried because another writer may grow the value in between (ERANGE).
Napi::Value Getxattr(const Napi::CallbackInfo& info) {
  RequireArgs(info, 2, "getxattr(path, name)");
  std::string path = PathArg(info, 0, "path");
  std::string name = PathArg(info, 1, "name");
  for (int attempt = 0; attempt < 8; ++attempt) {
    ssize_t size = getxattr(path.c_str(), name.c_str(), nullptr, 0);
    if (size < 0) ThrowErrno(info.Env(), errno, "getxattr", path);
    std::vector<char> buffer(static_cast<size_t>(size));
    ssize_t got = getxattr(path.c_str(), name.c_str(), buffer.data(), buffer.size());
    if (got < 0 && errno == ERANGE) continue;
    if (got < 0) ThrowErrno(info.Env(), errno, "getxattr", path);
    return Napi::Buffer<char>::Copy(info.Env(), buffer.data(), static_cast<size_t>(got));
  }
  ThrowErrno(info.Env(), ERANGE, "getxattr", path);
}

Napi::Value Listxattr(const Napi::CallbackInfo& info) {
  RequireArgs(info, 1, "listxattr(path)");
  std::string path = PathArg(info, 0, "path");
  for (int attempt = 0; attempt < 8; ++attempt) {
    ssize_t size = listxattr(path.c_str(), nullptr, 0);
    if (size < 0) ThrowErrno(info.Env(), errno, "listxattr", path);
    std::vector<char> buffer(static_cast<size_t>(size));
    ssize_t got = listxattr(path.c_str(), buffer.data(), buffer.size());
    if (got < 0 && errno == ERANGE) continue;
    if (got < 0) ThrowErrno(info.Env(), errno, "listxattr", path);
    Napi::Array names = Napi::Array::New(info.Env());
    uint32_t count = 0;
    for (ssize_t start = 0; start < got;) {
      size_t length = strnlen(buffer.data() + start, static_cast<size_t>(got - start));
      names.Set(count++, Napi::String::New(info.Env(), buffer.data() + start, length));
      start += static_cast<ssize_t>(length) + 1;
    }
    return names;
  }
  ThrowErrno(info.Env(), ERANGE, "listxattr", path);
}

Napi::Value Removexattr(const Napi::CallbackInfo& info) {
  RequireArgs(info, 2, "removexattr(path, name)");
  std::string path = PathArg(info, 0, "path");
  std::string name = PathArg(info, 1, "name");
  if (removexattr(path.c_str(), name.c_str()) != 0) ThrowErrno(info.Env(), errno, "removexattr", path);
  return info.Env().Undefined();
}

Napi::Value Statfs(const Napi::CallbackInfo& info) {
  RequireArgs(info, 1, "statfs(path)");
  std::string path = PathArg(info, 0, "path");
  struct statfs result;
  if (statfs(path.c_str(), &result) != 0) ThrowErrno(info.Env(), errno, "statfs", path);
  Napi::Env env = info.Env();
  Napi::Object out = Napi::Object::New(env);
  out.Set("type", Napi::Number::New(env, static_cast<double>(result.f_type)));
  out.Set("bsize", Napi::Number::New(env, static_cast<double>(result.f_bsize)));
  out.Set("frsize", Napi::Number::New(env, static_cast<double>(result.f_frsize)));
  out.Set("blocks", Napi::Number::New(env, static_cast<double>(result.f_blocks)));
  out.Set("bfree", Napi::Number::New(env, static_cast<double>(result.f_bfree)));
  out.Set("bavail", Napi::Number::New(env, static_cast<double>(result.f_bavail)));
  out.Set("files", Napi::Number::New(env, static_cast<double>(result.f_files)));
  out.Set("ffree", Napi::Number::New(env, static_cast<double>(result.f_ffree)));
  out.Set("namelen", Napi::Number::New(env, static_cast<double>(result.f_namelen)));
  return out;
}

// A store through a MAP_SHARED mapping past EOF raises SIGBUS, which would kill Node rather than
// fail a test, so the range is checked against the size first (tests do not truncate concurrently).
struct Mapping {
  void* base = MAP_FAILED;
  size_t length = 0;
  size_t delta = 0;  // offset of the requested byte inside the page-aligned mapping
  ~Mapping() {
    if (base != MAP_FAILED) munmap(base, length);
  }
  char* At() const { return static_cast<char*>(base) + delta; }
};

void MapRange(const Napi::CallbackInfo& info, int fd, int64_t offset, size_t len, int prot, Mapping& mapping) {
  struct stat st;
  if (fstat(fd, &st) != 0) ThrowErrno(info.Env(), errno, "fstat");
  if (offset + static_cast<int64_t>(len) > st.st_size) {
    Napi::RangeError error = Napi::RangeError::New(
        info.Env(), "mmap range [" + std::to_string(offset) + ", " + std::to_string(offset + len) +
                        ") extends past EOF " + std::to_string(st.st_size) + " (would raise SIGBUS)");
    error.Set("code", Napi::String::New(info.Env(), "E_MMAP_PAST_EOF"));
    throw error;
  }
  int64_t page = sysconf(_SC_PAGESIZE);
  int64_t aligned = offset - offset % page;
  mapping.delta = static_cast<size_t>(offset - aligned);
  mapping.length = mapping.delta + len;
  mapping.base = mmap(nullptr, mapping.length, prot, MAP_SHARED, fd, aligned);
  if (mapping.base == MAP_FAILED) ThrowErrno(info.Env(), errno, "mmap");
}

// Writes `data` through a shared mapping, msyncs, and returns the bytes read back through the
// same mapping; the caller then checks them against read(2).
Napi::Value MmapWriteRead(const Napi::CallbackInfo& info) {
  RequireArgs(info, 3, "mmapWriteRead(fd, offset, data)");
  int fd = FdArg(info, 0, "fd");
  int64_t offset = IntegerArg(info, 1, "offset", 0);
  std::string data = BytesArg(info, 2, "data");
  if (data.empty()) return Napi::Buffer<char>::New(info.Env(), 0);
  Mapping mapping;
  MapRange(info, fd, offset, data.size(), PROT_READ | PROT_WRITE, mapping);
  memcpy(mapping.At(), data.data(), data.size());
  if (msync(mapping.base, mapping.length, MS_SYNC) != 0) ThrowErrno(info.Env(), errno, "msync");
  return Napi::Buffer<char>::Copy(info.Env(), mapping.At(), data.size());
}

// Reads through a fresh shared mapping: shows what a page-cache reader sees after write(2).
Napi::Value MmapRead(const Napi::CallbackInfo& info) {
  RequireArgs(info, 3, "mmapRead(fd, offset, length)");
  int fd = FdArg(info, 0, "fd");
  int64_t offset = IntegerArg(info, 1, "offset", 0);
  size_t length = static_cast<size_t>(IntegerArg(info, 2, "length", 0));
  if (length == 0) return Napi::Buffer<char>::New(info.Env(), 0);
  Mapping mapping;
  MapRange(info, fd, offset, length, PROT_READ, mapping);
  return Napi::Buffer<char>::Copy(info.Env(), mapping.At(), length);
}

Napi::Value OpenTmpfile(const Napi::CallbackInfo& info) {
  RequireArgs(info, 2, "openTmpfile(dir, mode)");
  std::string dir = PathArg(info, 0, "dir");
  mode_t mode = static_cast<mode_t>(IntegerArg(info, 1, "mode", 0));
  int fd = open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, mode);
  if (fd < 0) ThrowErrno(info.Env(), errno, "open", dir);
  return Napi::Number::New(info.Env(), fd);
}

// linkat(AT_EMPTY_PATH) gives an O_TMPFILE file its first name.
Napi::Value LinkFd(const Napi::CallbackInfo& info) {
  RequireArgs(info, 2, "linkFd(fd, newPath)");
  int fd = FdArg(info, 0, "fd");
  std::string path = PathArg(info, 1, "newPath");
  if (linkat(fd, "", AT_FDCWD, path.c_str(), AT_EMPTY_PATH) != 0) ThrowErrno(info.Env(), errno, "linkat", path);
  return info.Env().Undefined();
}

Napi::Value Makedev(const Napi::CallbackInfo& info) {
  RequireArgs(info, 2, "makedev(major, minor)");
  unsigned major_number = static_cast<unsigned>(IntegerArg(info, 0, "major", 0));
  unsigned minor_number = static_cast<unsigned>(IntegerArg(info, 1, "minor", 0));
  return Napi::Number::New(info.Env(), static_cast<double>(makedev(major_number, minor_number)));
}

}  // namespace

void InitSyscalls(Napi::Env env, Napi::Object exports) {
  Napi::Object sys = Napi::Object::New(env);
  sys.Set("renameat2", Napi::Function::New(env, Renameat2, "renameat2"));
  sys.Set("fallocate", Napi::Function::New(env, Fallocate, "fallocate"));
  sys.Set("lseek", Napi::Function::New(env, Lseek, "lseek"));
  sys.Set("copyFileRange", Napi::Function::New(env, CopyFileRange, "copyFileRange"));
  sys.Set("mknod", Napi::Function::New(env, Mknod, "mknod"));
  sys.Set("setxattr", Napi::Function::New(env, Setxattr, "setxattr"));
  sys.Set("getxattr", Napi::Function::New(env, Getxattr, "getxattr"));
  sys.Set("listxattr", Napi::Function::New(env, Listxattr, "listxattr"));
  sys.Set("removexattr", Napi::Function::New(env, Removexattr, "removexattr"));
  sys.Set("statfs", Napi::Function::New(env, Statfs, "statfs"));
  sys.Set("mmapWriteRead", Napi::Function::New(env, MmapWriteRead, "mmapWriteRead"));
  sys.Set("mmapRead", Napi::Function::New(env, MmapRead, "mmapRead"));
  sys.Set("openTmpfile", Napi::Function::New(env, OpenTmpfile, "openTmpfile"));
  sys.Set("linkFd", Napi::Function::New(env, LinkFd, "linkFd"));
  sys.Set("makedev", Napi::Function::New(env, Makedev, "makedev"));

  Napi::Object constants = Napi::Object::New(env);
  constants.Set("RENAME_NOREPLACE", Napi::Number::New(env, RENAME_NOREPLACE));
  constants.Set("RENAME_EXCHANGE", Napi::Number::New(env, RENAME_EXCHANGE));
  constants.Set("FALLOC_FL_KEEP_SIZE", Napi::Number::New(env, FALLOC_FL_KEEP_SIZE));
  constants.Set("FALLOC_FL_PUNCH_HOLE", Napi::Number::New(env, FALLOC_FL_PUNCH_HOLE));
  constants.Set("FALLOC_FL_ZERO_RANGE", Napi::Number::New(env, FALLOC_FL_ZERO_RANGE));
  constants.Set("SEEK_SET", Napi::Number::New(env, SEEK_SET));
  constants.Set("SEEK_CUR", Napi::Number::New(env, SEEK_CUR));
  constants.Set("SEEK_END", Napi::Number::New(env, SEEK_END));
  constants.Set("SEEK_DATA", Napi::Number::New(env, SEEK_DATA));
  constants.Set("SEEK_HOLE", Napi::Number::New(env, SEEK_HOLE));
  constants.Set("XATTR_CREATE", Napi::Number::New(env, XATTR_CREATE));
  constants.Set("XATTR_REPLACE", Napi::Number::New(env, XATTR_REPLACE));
  sys.Set("constants", constants);
  exports.Set("sys", sys);
}

}  // namespace ephemera
