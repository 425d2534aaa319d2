#include "addon.h"

namespace {
Napi::Object Init(Napi::Env env, Napi::Object exports) {
  ephemera::InitSession(env, exports);
  ephemera::InitSyscalls(env, exports);
  return exports;
}
}  // namespace

NODE_API_MODULE(fuse_store, Init)
