// FUSE over io_uring (kernel 6.14+, protocol 7.42): requests arrive in registered ring entries
// and each answer is submitted together with the fetch of the next request (COMMIT_AND_FETCH),
// so a round trip costs one io_uring_enter instead of a read() plus a writev(), and the request
// stays on the CPU that issued it (one queue per possible CPU, the kernel picks the queue of the
// requesting task's CPU).
//
// Life cycle, as the kernel (fs/fuse/dev_uring.c) dictates it:
//  1. Prepare(), before INIT is answered: one io_uring (SQE128) and its entries per possible CPU.
//     Only when this worked does INIT ask for FUSE_OVER_IO_URING, because once the kernel agreed
//     it holds every new request back until all queues are registered, and only a failed
//     REGISTER (which needs a working ring) tells it to stay on /dev/fuse.
//  2. Start(), after the INIT reply is written (REGISTER answers EAGAIN before that): every queue
//     thread registers its entries. All queues registered = the kernel switches to the ring. Any
//     failure makes the kernel clear fc->io_uring and keep serving /dev/fuse; Start says which.
//  3. FORGET, BATCH_FORGET and INTERRUPT still come through /dev/fuse (the kernel's ring ops send
//     them there), so one device thread keeps reading it.
//  4. Teardown: aborting the connection completes every parked entry with ENOTCONN, and an
//     eventfd poll wakes each thread regardless; Stop() joins them and closes the rings.
#pragma once
#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>
#include "fs.h"

namespace ephemera {

struct UringQueue;

class UringTransport {
 public:
  // `dev_fd` is the mount's /dev/fuse fd (every queue registers on it). `depth`: entries per queue.
  UringTransport(Filesystem* fs, int dev_fd, int depth);
  ~UringTransport();

  // True when the fuse module lets daemons use io_uring (/sys/module/fuse/parameters/enable_uring);
  // else false with the reason in *why.
  static bool KernelOffers(std::string* why);

  // Step 1 above. 0 or an errno, with a message in *err.
  int Prepare(std::string* err);
  // Step 2 above. True when every queue registered (requests now travel over the rings); false
  // with the reason in *err when the kernel was left (or told) to serve /dev/fuse.
  bool Start(std::string* err);
  // Wakes and joins the queue threads and closes the rings. Call after the connection is aborted
  // or unmounted. Idempotent.
  void Stop();

  int queues() const { return static_cast<int>(queues_.size()); }
  int depth() const { return depth_; }

 private:
  void Run(UringQueue* q);
  void TellKernelToStayOnDevice();

  Filesystem* fs_;
  int dev_fd_;
  int depth_;
  size_t payload_size_ = 0;
  std::vector<std::unique_ptr<UringQueue>> queues_;
  std::vector<std::thread> threads_;
  std::mutex mu_;
  std::atomic<bool> stopping_{false};
  bool stopped_ = false;
};

}  // namespace ephemera
