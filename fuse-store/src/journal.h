// The restart journal's per-request plumbing (the journal itself is in journal.cc): which
// requests change the table, and the sink that writes their records before their reply.
#pragma once
#include <unistd.h>
#include <deque>
#include <string>
#include "fs.h"

namespace ephemera {

// Bit 63 of `unique` marks a request the kernel resent after FUSE_NOTIFY_RESEND (7.40).
constexpr uint64_t kUniqueResend = 1ULL << 63;
// INIT flag the kernel sets when it understands FUSE_NOTIFY_RESEND (flags2 bit 7).
constexpr uint64_t kInitHasResend = 1ULL << 39;
constexpr int kNotifyResend = 7;
constexpr uint32_t kResendAttempts = 3;  // enum fuse_notify_code: FUSE_NOTIFY_RESEND

struct Filesystem::Journal {
  std::string path;
  int fd = -1;
  std::deque<std::pair<uint64_t, std::string>> replies;  // unique (resend bit cleared) → reply bytes
  JournalStats stats;
  uint64_t snapshot_bytes = 0;
  // Resent requests handed to a successor and not answered (unique → successors that got it):
  // one that killed kResendAttempts successors is answered EIO instead of killing another.
  std::deque<std::pair<uint64_t, uint32_t>> attempts;  // the last snapshot's size: compaction waits for a multiple of it
  ~Journal() {
    if (fd >= 0) close(fd);
  }
  int Append(const std::string& payload);  // one framed batch; 0 or errno
};

// One request's journaling: collects the inodes and entries it changes (thread-local; every
// serving thread runs one request at a time) and commits them once, at its reply or at its end.
struct JournalScope {
  JournalScope(Filesystem* fs, uint32_t opcode);
  ~JournalScope();
  bool active() const { return fs_ != nullptr; }
  Filesystem* fs_ = nullptr;
};

// Test-only stop points (EPHEMERA_TEST_STOP="read:RENAME" or "applied:RENAME"): the daemon
// SIGKILLs itself after reading the first such request, or after journaling it but before its
// reply, so tests can kill at exactly those points. Unset: never.
bool TestStopAt(const char* point, uint32_t opcode);

class JournalSink : public ReplySink {
 public:
  JournalSink(Filesystem* fs, ReplySink* inner, uint64_t unique, uint32_t opcode)
      : fs_(fs), inner_(inner), unique_(unique), opcode_(opcode) {}
  int Send(const iovec* iov, int count) override {
    if (fs_) {
      fs_->JournalCommit(unique_, iov, count);
      TestStopAt("applied", opcode_);
    }
    return inner_->Send(iov, count);
  }

 private:
  Filesystem* fs_;
  ReplySink* inner_;
  uint64_t unique_;
  uint32_t opcode_;
};

}  // namespace ephemera
