#include "errno_names.h"

#include <cerrno>

namespace ephemera {

const char* ErrnoName(int err) {
  switch (err) {
#define EPHEMERA_ERRNO_CASE(name) \
  case name:                      \
    return #name;
    EPHEMERA_ERRNO_NAMES(EPHEMERA_ERRNO_CASE)
#undef EPHEMERA_ERRNO_CASE
    default:
      return nullptr;
  }
}

std::string ErrnoCode(int err) {
  const char* name = ErrnoName(err);
  return name ? std::string(name) : "E" + std::to_string(err);
}

}  // namespace ephemera
