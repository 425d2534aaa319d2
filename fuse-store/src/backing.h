// Passthrough backing files: the kernel's registration of a backing file (FUSE_DEV_IOC_BACKING_OPEN
// hands out an id, FUSE_DEV_IOC_BACKING_CLOSE gives it back) and the type that owns one id.
#pragma once
#include <cstdint>
#include <utility>

namespace ephemera {

// Registers passthrough backing files with the kernel (the transport, over its /dev/fuse file).
class BackingRegistry {
 public:
  virtual ~BackingRegistry() = default;
  virtual int Open(int fd) = 0;  // backing id, or -errno
  virtual void Close(int id) = 0;
};

// One registered backing id, move-only: reset() or the destructor closes it through the registry
// in force at that moment (`*registry`, the file system's slot for the mount's transport). With
// none in force the id is only forgotten: the connection owns its ids and frees them when it goes
// (a failed mount, a takeover loading its journal before it has a transport, a file system being
// destroyed), and a successor must find them open. Closing is the caller's to place: RELEASE moves
// the id out under the lock and resets it after (see OpRELEASE).
class BackingId {
 public:
  BackingId() = default;
  BackingId(BackingRegistry* const* registry, int32_t id) : registry_(registry), id_(id) {}
  ~BackingId() { reset(); }
  BackingId(BackingId&& o) noexcept : registry_(o.registry_), id_(std::exchange(o.id_, -1)) {}
  BackingId& operator=(BackingId&& o) noexcept {
    if (this != &o) {
      reset();
      registry_ = o.registry_;
      id_ = std::exchange(o.id_, -1);
    }
    return *this;
  }
  BackingId(const BackingId&) = delete;
  BackingId& operator=(const BackingId&) = delete;

  bool valid() const { return id_ >= 0; }
  int32_t get() const { return id_; }  // -1: none (the journal records it as is)
  void reset() {
    if (id_ >= 0 && registry_ && *registry_) (*registry_)->Close(id_);
    id_ = -1;
  }
  // Lets go without closing: the connection is gone, and its ids with it.
  void forget() { id_ = -1; }

 private:
  BackingRegistry* const* registry_ = nullptr;
  int32_t id_ = -1;
};

}  // namespace ephemera
