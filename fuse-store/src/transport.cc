#include "transport.h"

#include <fcntl.h>
#include <linux/capability.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <sstream>
#include "journal.h"

namespace ephemera {
namespace {

// Writes replies to /dev/fuse, a metadata-sized one only once the request's handler has returned
// (Flush), so never while the handler holds the file system's lock. Written under the lock, the
// reply woke the caller, whose next request was read by the other serving thread, which then
// blocked on the held lock: every futex call in a create/write/close/unlink loop was that lock
// (strace, 4.7 per file with 2 queues). The reply is copied here at Send, under the lock, so it
// never points at state another thread may change once the lock is let go. A journaled reply is
// journaled before it reaches Send (JournalSink), so it still reaches the journal before the
// kernel. Holding it changes no ordering the kernel relies on: a synchronous reply is applied by
// its caller after it wakes, in no order across callers, and stale attributes are refused by
// attr_version; a reply naming a backing id or a nodeid keeps it alive through open_count and
// nlookup, which only the kernel's later RELEASE/FORGET for that very reply can drop.
class DeviceSink : public ReplySink {
 public:
  explicit DeviceSink(int fd) : fd_(fd) {}
  DeviceSink(const DeviceSink&) = delete;
  DeviceSink& operator=(const DeviceSink&) = delete;
  ~DeviceSink() override { Flush(); }

  // Returns 0 for a held reply (Flush writes it); a larger one (READ data, a long listing) goes
  // out at once.
  int Send(const iovec* iov, int count) override {
    Flush();  // one reply per request; never reorder two
    size_t total = 0;
    for (int i = 0; i < count; ++i) total += iov[i].iov_len;
    if (total > sizeof(held_)) return Write(iov, count);
    for (int i = 0; i < count; ++i) memcpy(held_ + held_len_, iov[i].iov_base, iov[i].iov_len), held_len_ += iov[i].iov_len;
    return 0;
  }
  int Flush() {
    if (!held_len_) return 0;
    iovec iov{held_, held_len_};
    held_len_ = 0;
    return Write(&iov, 1);
  }

 private:
  int Write(const iovec* iov, int count) {
    ssize_t n = writev(fd_, iov, count);
    // ENOENT: the request was interrupted or the connection aborted meanwhile; nothing to do.
    return n < 0 ? -errno : 0;
  }

  int fd_;
  // A CREATE reply is 176 bytes, a READDIR page 4 KiB plus the header.
  alignas(8) uint8_t held_[sizeof(fuse_out_header) + 4096];
  size_t held_len_ = 0;
};

// "major:minor" of the mount at `path`, from mountinfo (stat would ask our own, not yet
// answering, daemon for the root's attributes).
std::string MountDevice(const std::string& path) {
  std::ifstream mi("/proc/self/mountinfo");
  std::string line, found;
  while (std::getline(mi, line)) {
    std::istringstream ss(line);
    std::string id, parent, dev, root, mp;
    ss >> id >> parent >> dev >> root >> mp;
    if (mp == path) found = dev;  // the last one listed is the top of the stack
  }
  return found;
}

}  // namespace

bool MayPassthrough() {
  __user_cap_header_struct hdr{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2]{};
  if (syscall(SYS_capget, &hdr, data) != 0) return false;
  if (!(data[0].effective & (1u << CAP_SYS_ADMIN))) return false;
  std::ifstream um("/proc/self/uid_map");
  uint64_t inside = 1, outside = 1, count = 0;
  um >> inside >> outside >> count;
  return inside == 0 && outside == 0 && count == 4294967295ULL;
}

int DetachMount(const std::string& path) {
  if (umount2(path.c_str(), MNT_DETACH) == 0) return 0;
  return errno;
}

int AbortConnection(const std::string& connection) {
  if (connection.empty()) return EINVAL;
  std::string dir = "/sys/fs/fuse/connections";
  std::string abort_path = dir + "/" + connection + "/abort";
  int fd = open(abort_path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0 && errno == ENOENT) {
    mount("fusectl", dir.c_str(), "fusectl", 0, nullptr);  // not mounted yet on minimal hosts
    fd = open(abort_path.c_str(), O_WRONLY | O_CLOEXEC);
  }
  if (fd < 0) return errno;
  ssize_t n = write(fd, "1", 1);
  int e = n == 1 ? 0 : errno;
  close(fd);
  return e;
}

Transport::~Transport() { Stop(); }

int Transport::Mount(std::string* err) {
  master_fd_ = open("/dev/fuse", O_RDWR | O_CLOEXEC);
  if (master_fd_ < 0) {
    int e = errno;
    *err = std::string("cannot open /dev/fuse: ") + strerror(e);
    return e;
  }
  // io_uring only when asked for: it cut metadata round trips by ~13% here, but when the daemon
  // dies the kernel cancels the ring's queued commands asynchronously, so for a moment callers get
  // ECANCELED instead of ENOTCONN (seen in CI). The /dev/fuse loops fail cleanly with ENOTCONN.
  if (opts_.transport == "uring") {
    std::string why;
    int e = 0;
    if (UringTransport::KernelOffers(&why)) {
      uring_ = std::make_unique<UringTransport>(fs_, master_fd_, opts_.uring_depth);
      e = uring_->Prepare(&why);
      if (e != 0) uring_.reset();
    } else {
      e = EOPNOTSUPP;
    }
    if (e != 0 && opts_.transport == "uring") {
      *err = "FUSE over io_uring unavailable: " + why;
      close(master_fd_);
      master_fd_ = -1;
      return e;
    }
    uring_note_ = why;
    fs_->set_want_uring(uring_ != nullptr);
  }
  std::string data = "fd=" + std::to_string(master_fd_) + ",rootmode=40000,user_id=" + std::to_string(getuid()) +
                     ",group_id=" + std::to_string(getgid()) + ",default_permissions";
  if (opts_.allow_other) data += ",allow_other";
  unsigned long flags = MS_NOSUID | MS_NODEV;
  int r = mount(opts_.fsname.c_str(), opts_.mountpoint.c_str(), "fuse.ephemera", flags, data.c_str());
  if (r != 0 && errno == ENODEV) r = mount(opts_.fsname.c_str(), opts_.mountpoint.c_str(), "fuse", flags, data.c_str());
  if (r != 0) {
    int e = errno;
    *err = "mount(" + opts_.mountpoint + "): " + strerror(e);
    close(master_fd_);
    master_fd_ = -1;
    return e;
  }
  std::string dev = MountDevice(opts_.mountpoint);
  if (auto colon = dev.find(':'); colon != std::string::npos) {
    unsigned major = std::stoul(dev.substr(0, colon)), minor = std::stoul(dev.substr(colon + 1));
    connection_ = std::to_string((major << 20) | minor);
  }
  running_ = 1;
  threads_.emplace_back([this] { Serve(master_fd_, true); });
  return 0;
}

int Transport::Adopt(const std::vector<int>& fds, bool resend, std::string* err) {
  if (fds.empty()) {
    *err = "no /dev/fuse file to adopt";
    return EINVAL;
  }
  std::string dev = MountDevice(opts_.mountpoint);
  if (auto colon = dev.find(':'); colon != std::string::npos) {
    unsigned major = std::stoul(dev.substr(0, colon)), minor = std::stoul(dev.substr(colon + 1));
    connection_ = std::to_string((major << 20) | minor);
  }
  adopted_ = true;
  master_fd_ = fds[0];
  std::lock_guard lock(mu_);
  running_ = static_cast<int>(fds.size());
  threads_.emplace_back([this] { Serve(master_fd_, false); });
  for (size_t i = 1; i < fds.size(); ++i) {
    clone_fds_.push_back(fds[i]);
    int fd = fds[i];
    threads_.emplace_back([this, fd] { Serve(fd, false); });
  }
  if (resend) {
    // A notification: unique 0, the code in `error`, no payload (fs/fuse/dev.c, fuse_notify).
    fuse_out_header h{};
    h.len = sizeof(h);
    h.error = kNotifyResend;
    h.unique = 0;
    if (write(master_fd_, &h, sizeof(h)) != static_cast<ssize_t>(sizeof(h))) {
      *err = std::string("FUSE_NOTIFY_RESEND: ") + strerror(errno);
      return 0;  // served anyway; requests the dead daemon had read stay unanswered
    }
  }
  return 0;
}

std::vector<int> Transport::device_fds() {
  std::lock_guard lock(mu_);
  std::vector<int> fds;
  if (master_fd_ >= 0) fds.push_back(master_fd_);
  fds.insert(fds.end(), clone_fds_.begin(), clone_fds_.end());
  return fds;
}

void Transport::StartClones() {
  std::lock_guard lock(mu_);
  for (int i = 1; i < opts_.queues && !stopping_; ++i) {
    int fd = open("/dev/fuse", O_RDWR | O_CLOEXEC);
    if (fd < 0) break;
    uint32_t master = static_cast<uint32_t>(master_fd_);
    if (ioctl(fd, abi::kDevIocClone, &master) != 0) {
      close(fd);
      break;  // one queue still serves everything
    }
    clone_fds_.push_back(fd);
    running_++;
    threads_.emplace_back([this, fd] { Serve(fd, false); });
  }
}

namespace {
// Wakes a serving thread out of read(2) on /dev/fuse for a hand-over: its handler does nothing and
// is installed without SA_RESTART, so the read returns EINTR and the loop sees stopping_.
int WakeSignal() { return SIGRTMIN + 4; }
void InstallWakeHandler() {
  static const bool installed = [] {
    struct sigaction sa {};
    sa.sa_handler = [](int) {};
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;
    return sigaction(WakeSignal(), &sa, nullptr) == 0;
  }();
  (void)installed;
}
}  // namespace

void Transport::Serve(int fd, bool first) {
  sigset_t wake;
  sigemptyset(&wake);
  sigaddset(&wake, WakeSignal());
  pthread_sigmask(SIG_UNBLOCK, &wake, nullptr);
  // Room for the largest WRITE (max_write) plus its headers. mmap'd, so an idle queue costs
  // address space, not resident memory.
  const size_t size = (1 << 20) + 64 * 1024;
  void* mem = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) {
    ThreadExited();
    return;
  }
  auto* buf = static_cast<uint8_t*>(mem);
  DeviceSink sink(fd);
  bool announced = false;
  while (!stopping_) {
    ssize_t n = read(fd, buf, size);
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN || errno == ENOENT) continue;
      break;  // ENODEV: unmounted; ECONNABORTED: aborted
    }
    fs_->Dispatch(buf, static_cast<size_t>(n), &sink);
    sink.Flush();  // the handler has let go of the lock (see DeviceSink)
    if (adopted_ && first_request_ms_.load(std::memory_order_relaxed) == 0) {
      timespec ts;
      clock_gettime(CLOCK_REALTIME, &ts);
      first_request_ms_ = ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
    }
    if (first && !announced && fs_->initialized()) {
      announced = true;
      StartUringOrClones();
      if (on_ready_) on_ready_();
    }
  }
  munmap(mem, size);
  ThreadExited();
}

void Transport::StartUringOrClones() {
  if (uring_ && fs_->uring()) {
    // The INIT reply is written, so the kernel accepts registrations now.
    std::string why;
    bool ok = uring_->Start(&why);
    std::lock_guard lock(info_mu_);
    uring_active_ = ok;
    uring_note_ = ok ? "" : why;
  } else if (uring_) {
    std::lock_guard lock(info_mu_);
    uring_note_ = "the kernel did not offer FUSE_OVER_IO_URING in INIT";
  }
  // With the rings active this thread still serves /dev/fuse: FORGET and INTERRUPT come there.
  if (!uring_active_) StartClones();
}

std::string Transport::active_transport() const {
  std::lock_guard lock(info_mu_);
  return uring_active_ ? "uring" : "device";
}
std::string Transport::uring_note() const {
  std::lock_guard lock(info_mu_);
  return uring_note_;
}
int Transport::uring_queues() const {
  std::lock_guard lock(info_mu_);
  return uring_active_ && uring_ ? uring_->queues() : 0;
}

void Transport::ThreadExited() {
  if (--running_ == 0 && on_stopped_ && !handed_over_) on_stopped_();
}

int Transport::HandOver(int timeout_ms) {
  {
    std::lock_guard lock(mu_);
    if (stopped_) return 0;
    std::lock_guard info(info_mu_);
    if (uring_active_) return EOPNOTSUPP;
    stopped_ = true;
    handed_over_ = true;
    stopping_ = true;
  }
  InstallWakeHandler();
  // Signalled until every loop is out: one between its stopping_ check and read(2) misses the
  // first signal and blocks; the next one wakes it.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (running_.load() > 0) {
    if (std::chrono::steady_clock::now() > deadline) return ETIMEDOUT;
    {
      std::lock_guard lock(mu_);
      for (auto& t : threads_)
        if (t.joinable()) pthread_kill(t.native_handle(), WakeSignal());
    }
    usleep(2000);
  }
  for (auto& t : threads_)
    if (t.joinable()) t.join();
  threads_.clear();
  for (int fd : clone_fds_) close(fd);
  clone_fds_.clear();
  if (master_fd_ >= 0) close(master_fd_);
  master_fd_ = -1;
  return 0;
}

int Transport::Open(int fd) {
  abi::BackingMap map{};
  map.fd = fd;
  int id = ioctl(master_fd_, abi::kDevIocBackingOpen, &map);
  return id < 0 ? -errno : id;
}

void Transport::Close(int id) {
  uint32_t bid = static_cast<uint32_t>(id);
  ioctl(master_fd_, abi::kDevIocBackingClose, &bid);
}

void Transport::Stop() {
  {
    std::lock_guard lock(mu_);
    if (stopped_) return;
    stopped_ = true;
    stopping_ = true;
  }
  if (master_fd_ >= 0) {
    umount2(opts_.mountpoint.c_str(), MNT_DETACH);
    // Aborting wakes every thread blocked in read() and fails whatever a lazily detached mount
    // still had open (ENOTCONN), so Stop always returns.
    AbortConnection(connection_);
  }
  for (auto& t : threads_) {
    if (t.joinable()) t.join();
  }
  threads_.clear();
  // After the device threads: the first one may still have been starting the rings.
  if (uring_) uring_->Stop();
  for (int fd : clone_fds_) close(fd);
  clone_fds_.clear();
  if (master_fd_ >= 0) close(master_fd_);
  master_fd_ = -1;
}

}  // namespace ephemera
