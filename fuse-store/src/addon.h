// Registration seams of the fuse_store addon: each source file exports its part of the module.
#pragma once
#include <napi.h>

namespace ephemera {
// 2^53 - 1: above it a JS number no longer names every integer (byte offset, inode, token) exactly.
constexpr double kMaxSafeInteger = 9007199254740991.0;

// session.cc: the FUSE session (mount, serve, unmount, counters, dispatch-without-mount).
void InitSession(Napi::Env env, Napi::Object exports);
// syscalls.cc: thin wrappers over syscalls Node's fs lacks (renameat2, fallocate, SEEK_DATA, …),
// used by the conformance and model tests.
void InitSyscalls(Napi::Env env, Napi::Object exports);
}  // namespace ephemera
