// Registration seams of the ephemera_core addon: each source file exports its part of the module.
#pragma once
#include <napi.h>

namespace ephemera {
// session.cc: the FUSE session (mount, serve, unmount, counters, dispatch-without-mount).
void InitSession(Napi::Env env, Napi::Object exports);
// syscalls.cc: thin wrappers over syscalls Node's fs lacks (renameat2, fallocate, SEEK_DATA, …),
// used by the conformance and model tests.
void InitSyscalls(Napi::Env env, Napi::Object exports);
}  // namespace ephemera
