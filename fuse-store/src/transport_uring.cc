#include "transport_uring.h"

#include <liburing.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/sysinfo.h>
#include <unistd.h>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <future>

namespace ephemera {
namespace {

// The io_uring part of include/uapi/linux/fuse.h (7.42); Debian's header predates it.
struct RingEntInOut {
  uint64_t flags;
  uint64_t commit_id;   // the request's unique, echoed in the commit
  uint32_t payload_sz;  // valid bytes in the payload buffer, either direction
  uint32_t padding;
  uint64_t reserved;
};
struct RingReqHeader {
  uint8_t in_out[128];  // fuse_in_header on fetch, fuse_out_header on commit
  uint8_t op_in[128];   // the request's first in-arg (the per-opcode struct), when it has one
  RingEntInOut ent;
};
struct RingCmdReq {  // in the SQE128's 80-byte command area
  uint64_t flags;
  uint64_t commit_id;
  uint16_t qid;
  uint8_t padding[6];
};
static_assert(sizeof(RingEntInOut) == 32);
static_assert(sizeof(RingReqHeader) == 288);
static_assert(offsetof(RingReqHeader, ent) == 256);
static_assert(sizeof(RingCmdReq) == 24);
constexpr uint32_t kCmdRegister = 1;
constexpr uint32_t kCmdCommitAndFetch = 2;

// Each entry is one mapping: the ring header at the start, the payload buffer from kHeadroom on.
// The bytes right before the payload are free, so a request is made contiguous (fuse_in_header +
// op struct + payload, what Filesystem::Dispatch takes) by copying at most 168 bytes in front of
// the payload, never the payload itself.
constexpr size_t kHeadroom = 4096;
constexpr size_t kMaxOpIn = sizeof(RingReqHeader::op_in);
static_assert(sizeof(RingReqHeader) + sizeof(fuse_in_header) + kMaxOpIn <= kHeadroom);

// Tags a completion that is not an entry's: the eventfd poll that wakes a thread for Stop.
constexpr uint64_t kWakeTag = 0;

bool Dying(int err) { return err == ENOTCONN || err == ECONNABORTED || err == ECANCELED || err == ENODEV; }

}  // namespace

struct UringEntry {
  uint8_t* mem = nullptr;
  size_t mem_size = 0;
  RingReqHeader* hdr = nullptr;
  uint8_t* payload = nullptr;
  iovec iov[2]{};
  uint64_t commit_id = 0;
  uint32_t last_cmd = 0;
  bool alive = false;
};

struct UringQueue {
  int qid = 0;
  io_uring ring{};
  bool ring_ok = false;
  int event_fd = -1;
  std::vector<UringEntry> entries;
  std::promise<int> registered;  // errno of the registration (0: every entry parked in the kernel)
};

namespace {

// Writes a reply into the entry: fuse_out_header into in_out, the reply args into the payload.
// The commit itself is queued by the caller once Dispatch returns.
class RingSink : public ReplySink {
 public:
  RingSink(UringEntry* e, size_t cap) : e_(e), cap_(cap) {}
  int Send(const iovec* iov, int count) override {
    fuse_out_header out = *static_cast<const fuse_out_header*>(iov[0].iov_base);
    size_t len = 0;
    for (int i = 1; i < count; ++i) {
      if (len + iov[i].iov_len > cap_) {
        out.error = -EIO;  // cannot happen with the kernel's own size limits; never overrun
        len = 0;
        break;
      }
      memmove(e_->payload + len, iov[i].iov_base, iov[i].iov_len);
      len += iov[i].iov_len;
    }
    out.len = static_cast<uint32_t>(sizeof(out) + len);
    memcpy(e_->hdr->in_out, &out, sizeof(out));
    e_->hdr->ent.payload_sz = static_cast<uint32_t>(len);
    sent_ = true;
    return 0;
  }
  bool sent() const { return sent_; }

 private:
  UringEntry* e_;
  size_t cap_;
  bool sent_ = false;
};

void PrepCmd(io_uring_sqe* sqe, int fd, UringEntry* e, uint32_t op, uint16_t qid) {
  memset(sqe, 0, 128);  // SQE128: the command area must not carry stale bytes
  sqe->opcode = IORING_OP_URING_CMD;
  sqe->fd = fd;
  sqe->cmd_op = op;
  sqe->user_data = reinterpret_cast<uint64_t>(e);
  if (op == kCmdRegister) {
    sqe->addr = reinterpret_cast<uint64_t>(e->iov);
    sqe->len = 2;
  }
  auto* req = reinterpret_cast<RingCmdReq*>(sqe->cmd);
  req->qid = qid;
  req->commit_id = op == kCmdCommitAndFetch ? e->commit_id : 0;
  e->last_cmd = op;
}

void PinToCpu(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  // Best effort: the queue serves requests issued on this CPU, so answering there keeps the
  // request's cache lines and wakeups local. A refusal (cpuset) only costs locality.
  pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

}  // namespace

UringTransport::UringTransport(Filesystem* fs, int dev_fd, int depth) : fs_(fs), dev_fd_(dev_fd), depth_(depth) {}

UringTransport::~UringTransport() { Stop(); }

bool UringTransport::KernelOffers(std::string* why) {
  std::ifstream f("/sys/module/fuse/parameters/enable_uring");
  std::string v;
  if (!(f >> v)) {
    *why = "this kernel's fuse module has no io_uring support (no enable_uring parameter)";
    return false;
  }
  if (v != "Y" && v != "1") {
    *why = "io_uring is disabled in the fuse module (echo Y > /sys/module/fuse/parameters/enable_uring)";
    return false;
  }
  return true;
}

int UringTransport::Prepare(std::string* err) {
  // The kernel has one queue per possible CPU and routes a request by the requester's CPU; the
  // ring only becomes active once every queue has an entry.
  int nr = get_nprocs_conf();
  if (nr < 1 || nr > 1024) {
    *err = "cannot count the possible CPUs";
    return EINVAL;
  }
  payload_size_ = std::max<size_t>(8192, (static_cast<size_t>(fs_->max_write()) + 4095) & ~size_t{4095});
  for (int qid = 0; qid < nr; ++qid) {
    auto q = std::make_unique<UringQueue>();
    q->qid = qid;
    q->event_fd = eventfd(0, EFD_CLOEXEC);
    if (q->event_fd < 0) {
      int e = errno;
      *err = std::string("eventfd: ") + strerror(e);
      queues_.push_back(std::move(q));
      return e;
    }
    io_uring_params params{};
    params.flags = IORING_SETUP_SQE128 | IORING_SETUP_CQSIZE;
    params.cq_entries = static_cast<unsigned>(2 * (depth_ + 1));
    int r = io_uring_queue_init_params(static_cast<unsigned>(depth_ + 1), &q->ring, &params);
    if (r < 0) {
      *err = std::string("io_uring_setup(SQE128): ") + strerror(-r);
      queues_.push_back(std::move(q));
      return -r;
    }
    q->ring_ok = true;
    q->entries.resize(static_cast<size_t>(depth_));
    for (auto& e : q->entries) {
      e.mem_size = kHeadroom + payload_size_;
      // Address space, not memory: only the bytes requests and replies touch become resident.
      void* m = mmap(nullptr, e.mem_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
      if (m == MAP_FAILED) {
        int er = errno;
        e.mem = nullptr;
        *err = std::string("mmap ring entry: ") + strerror(er);
        queues_.push_back(std::move(q));
        return er;
      }
      e.mem = static_cast<uint8_t*>(m);
      e.hdr = reinterpret_cast<RingReqHeader*>(e.mem);
      e.payload = e.mem + kHeadroom;
      e.iov[0] = {e.hdr, sizeof(RingReqHeader)};
      e.iov[1] = {e.payload, payload_size_};
    }
    queues_.push_back(std::move(q));
  }
  return 0;
}

bool UringTransport::Start(std::string* err) {
  std::vector<std::future<int>> results;
  {
    std::lock_guard lock(mu_);
    if (stopping_) {
      *err = "stopping";
      return false;
    }
    for (auto& q : queues_) {
      results.push_back(q->registered.get_future());
      UringQueue* raw = q.get();
      threads_.emplace_back([this, raw] { Run(raw); });
    }
  }
  bool all = true;
  for (size_t i = 0; i < results.size(); ++i) {
    // Registration completes inside io_uring_enter; the bound only guards against a thread that
    // never got to run.
    if (results[i].wait_for(std::chrono::seconds(5)) != std::future_status::ready) {
      *err = "queue " + std::to_string(i) + " did not register within 5 s";
      all = false;
      continue;
    }
    int e = results[i].get();
    if (e != 0) {
      if (all) *err = "queue " + std::to_string(i) + ": FUSE_IO_URING_CMD_REGISTER: " + strerror(e);
      all = false;
    }
  }
  if (!all) TellKernelToStayOnDevice();
  return all;
}

void UringTransport::TellKernelToStayOnDevice() {
  // Once INIT agreed FUSE_OVER_IO_URING the kernel holds new requests until every queue is
  // registered, and only a failed REGISTER makes it give up (fc->io_uring = 0). Most failures
  // already were one; for the others (a queue that never submitted) send one that must fail: an
  // out-of-range queue id. A throwaway ring, since the queue rings belong to their threads.
  io_uring ring{};
  io_uring_params params{};
  params.flags = IORING_SETUP_SQE128;
  if (io_uring_queue_init_params(2, &ring, &params) < 0) return;
  if (io_uring_sqe* sqe = io_uring_get_sqe(&ring)) {
    UringEntry dummy;
    PrepCmd(sqe, dev_fd_, &dummy, kCmdRegister, 0xffff);
    sqe->user_data = kWakeTag;
    io_uring_submit(&ring);
    io_uring_cqe* cqe = nullptr;
    if (io_uring_peek_cqe(&ring, &cqe) == 0) io_uring_cqe_seen(&ring, cqe);
  }
  io_uring_queue_exit(&ring);
}

void UringTransport::Run(UringQueue* q) {
  PinToCpu(q->qid);
  const uint16_t qid = static_cast<uint16_t>(q->qid);
  int live = 0;
  bool reported = false;
  int reg_err = 0;
  auto report = [&](int e) {
    if (reported) return;
    reported = true;
    q->registered.set_value(e);
  };

  // Serves one request that arrived in `e` and queues its commit (which also fetches the next).
  auto serve = [&](UringEntry* e) {
    auto* in = reinterpret_cast<const fuse_in_header*>(e->hdr->in_out);
    e->commit_id = e->hdr->ent.commit_id;
    const uint64_t unique = in->unique;
    const uint32_t total = in->len;
    const uint32_t psz = e->hdr->ent.payload_sz;
    RingSink sink(e, payload_size_);
    // The kernel puts in_args[0] in op_in and the rest in the payload, and in.len covers all.
    size_t head = sizeof(fuse_in_header);
    if (total >= head + psz && total - head - psz <= kMaxOpIn && psz <= payload_size_) {
      size_t op_in = total - head - psz;
      uint8_t* start = e->payload - head - op_in;
      memcpy(start, in, head);
      if (op_in) memcpy(start + head, e->hdr->op_in, op_in);
      fs_->Dispatch(start, total, &sink);
    }
    if (!sink.sent()) {
      // Malformed, or an opcode the protocol never answers (those come through /dev/fuse): the
      // entry only returns to the kernel with a commit, so answer anyway.
      fuse_out_header out{};
      out.len = sizeof(out);
      out.unique = unique;
      out.error = -EIO;
      memcpy(e->hdr->in_out, &out, sizeof(out));
      e->hdr->ent.payload_sz = 0;
    }
    io_uring_sqe* sqe = io_uring_get_sqe(&q->ring);
    if (!sqe) {  // one SQE per entry at most; cannot run out
      e->alive = false;
      live--;
      return;
    }
    PrepCmd(sqe, dev_fd_, e, kCmdCommitAndFetch, qid);
  };

  auto reap = [&](bool* wake) {
    unsigned head, n = 0;
    io_uring_cqe* cqe;
    io_uring_for_each_cqe(&q->ring, head, cqe) {
      n++;
      if (cqe->user_data == kWakeTag) {
        *wake = true;
        continue;
      }
      auto* e = reinterpret_cast<UringEntry*>(cqe->user_data);
      int res = cqe->res;
      if (res == 0) {
        serve(e);
        continue;
      }
      int er = -res;
      if ((er == EAGAIN || er == EINTR) && !stopping_) {
        if (io_uring_sqe* sqe = io_uring_get_sqe(&q->ring)) {
          PrepCmd(sqe, dev_fd_, e, e->last_cmd, qid);
          continue;
        }
      }
      if (e->last_cmd == kCmdRegister && !reported && reg_err == 0) reg_err = er;
      if (e->last_cmd == kCmdCommitAndFetch && !Dying(er) && !stopping_) {
        // The kernel lost track of this request (e.g. it was aborted meanwhile): the entry itself
        // is fine, so park it again rather than let the queue shrink.
        if (io_uring_sqe* sqe = io_uring_get_sqe(&q->ring)) {
          PrepCmd(sqe, dev_fd_, e, kCmdRegister, qid);
          continue;
        }
      }
      if (e->alive) e->alive = false, live--;
    }
    io_uring_cq_advance(&q->ring, n);
  };

  // Register every entry, plus the wake-up poll, in one submission. A REGISTER that fails does
  // so inside io_uring_enter, so its completion is visible as soon as the submit returns.
  for (auto& e : q->entries) {
    io_uring_sqe* sqe = io_uring_get_sqe(&q->ring);
    if (!sqe) break;
    PrepCmd(sqe, dev_fd_, &e, kCmdRegister, qid);
    e.alive = true;
    live++;
  }
  if (io_uring_sqe* sqe = io_uring_get_sqe(&q->ring)) {
    io_uring_prep_poll_add(sqe, q->event_fd, POLLIN);
    sqe->user_data = kWakeTag;
  }
  int r = io_uring_submit(&q->ring);
  if (r < 0) {
    report(-r);
    return;
  }
  bool wake = false;
  reap(&wake);
  // Entries still alive are parked in the kernel (or already serving a request).
  report(live > 0 ? 0 : (reg_err ? reg_err : EIO));
  while (!wake && live > 0) {
    r = io_uring_submit_and_wait(&q->ring, 1);
    if (r < 0 && r != -EINTR && r != -EAGAIN && r != -EBUSY) break;
    reap(&wake);
  }
}

void UringTransport::Stop() {
  {
    std::lock_guard lock(mu_);
    if (stopped_) return;
    stopped_ = true;
    stopping_ = true;
  }
  for (auto& q : queues_) {
    uint64_t one = 1;
    if (q->event_fd >= 0 && write(q->event_fd, &one, sizeof(one)) < 0) {
      // the poll is the fallback wake-up; an aborted connection has already woken the thread
    }
  }
  for (auto& t : threads_) {
    if (t.joinable()) t.join();
  }
  threads_.clear();
  for (auto& q : queues_) {
    // Closing the ring cancels whatever commands are still parked in the kernel.
    if (q->ring_ok) io_uring_queue_exit(&q->ring);
    q->ring_ok = false;
    if (q->event_fd >= 0) close(q->event_fd);
    q->event_fd = -1;
    for (auto& e : q->entries) {
      if (e.mem) munmap(e.mem, e.mem_size);
      e.mem = nullptr;
    }
  }
}

}  // namespace ephemera
