#include "addon.h"

namespace ephemera {
void InitSession(Napi::Env env, Napi::Object exports) {}
}  // namespace ephemera
