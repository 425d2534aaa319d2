// The /dev/fuse side of a mount: mount(2) with fd=, one serving thread per queue (each on its own
// cloned device fd, so requests spread over threads without a shared lock), passthrough backing
// registration, and teardown that never leaves a thread blocked in read().
#pragma once
#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>
#include "fs.h"
#include "transport_uring.h"

namespace ephemera {

struct TransportOptions {
  std::string mountpoint;
  int queues = 2;
  bool allow_other = false;
  std::string fsname = "ephemera";
  // device: the /dev/fuse loops. uring: FUSE over io_uring, refused at mount when the kernel
  // does not offer it. auto: io_uring when offered, else the device loops.
  std::string transport = "auto";
  int uring_depth = 8;  // ring entries per queue (per possible CPU)
};

class Transport : public BackingRegistry {
 public:
  Transport(Filesystem* fs, TransportOptions opts) : fs_(fs), opts_(std::move(opts)) {}
  ~Transport() override;

  // Opens /dev/fuse and mounts; on success starts the first serving thread, which answers INIT.
  // Returns 0 or an errno, with a message in *err.
  int Mount(std::string* err);
  // Serves a connection a killed daemon mounted (restartable mounts): `fds` are its /dev/fuse
  // files as the holder kept them (the first is the one the mount was made with; requests a dead
  // thread had read stay on that file's processing list). Starts a thread per file, and with
  // `resend` asks the kernel to queue those requests again (FUSE_NOTIFY_RESEND). The file system
  // must already be initialized from its journal. 0 or errno.
  int Adopt(const std::vector<int>& fds, bool resend, std::string* err);
  // The connection's /dev/fuse files being served (to hand to the holder).
  std::vector<int> device_fds();
  // CLOCK_REALTIME ms when an adopted connection served its first request (0: none yet).
  int64_t first_request_ms() const { return first_request_ms_.load(); }
  // Called (from a serving thread) once INIT is answered, and once when the last thread exits.
  void set_on_ready(std::function<void()> f) { on_ready_ = std::move(f); }
  void set_on_stopped(std::function<void()> f) { on_stopped_ = std::move(f); }
  // Detaches the mount, aborts the connection and joins the threads. Idempotent.
  void Stop();
  // For an upgrade of a restartable mount: stops reading requests, answers the ones already read,
  // joins the threads and closes our /dev/fuse files, leaving the mount and the connection (the
  // holder keeps its duplicates) to a successor; on_stopped is not called. 0, ETIMEDOUT when a
  // thread did not come back within `timeout_ms` (left running: the caller exits, as a crash would),
  // or EOPNOTSUPP for io_uring (its rings are not handed over).
  int HandOver(int timeout_ms);
  std::string connection() const { return connection_; }
  // The transport serving requests: "uring" or "device" (decided once INIT is answered), and
  // why io_uring is not used when it is not.
  std::string active_transport() const;
  std::string uring_note() const;
  int uring_queues() const;

  int Open(int fd) override;
  void Close(int id) override;

 private:
  void Serve(int fd, bool first);
  void StartClones();
  void StartUringOrClones();
  void ThreadExited();

  Filesystem* fs_;
  TransportOptions opts_;
  int master_fd_ = -1;
  std::vector<int> clone_fds_;
  std::vector<std::thread> threads_;
  std::mutex mu_;
  std::atomic<bool> stopping_{false};
  std::atomic<int> running_{0};
  std::string connection_;  // the fusectl connection name (the mount's device number)
  std::function<void()> on_ready_, on_stopped_;
  bool stopped_ = false;
  std::atomic<bool> handed_over_{false};
  std::unique_ptr<UringTransport> uring_;  // prepared before INIT; null when not wanted
  bool uring_active_ = false;              // every queue registered: requests travel over the rings
  std::string uring_note_;
  mutable std::mutex info_mu_;
  bool adopted_ = false;
  std::atomic<int64_t> first_request_ms_{0};
};

// Lazily detaches `path` if it is a mount; used to clean a dead daemon's mount. 0 or errno.
int DetachMount(const std::string& path);
// Aborts a FUSE connection through fusectl (mounting fusectl when needed). 0 or errno.
int AbortConnection(const std::string& connection);
// True when this process may register passthrough backing files (CAP_SYS_ADMIN in the initial
// user namespace); the kernel refuses BACKING_OPEN otherwise.
bool MayPassthrough();

}  // namespace ephemera
