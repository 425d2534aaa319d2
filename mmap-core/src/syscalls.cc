#include "addon.h"

namespace ephemera {
void InitSyscalls(Napi::Env env, Napi::Object exports) {
  exports.Set("sys", Napi::Object::New(env));
}
}  // namespace ephemera
