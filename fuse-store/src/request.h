// A parsed request (a typed view over the bytes the kernel sent) and its reply, which must be
// sent exactly once: a Reply dropped unanswered answers EIO from its destructor and is counted,
// so no request can ever leave a process in the kernel waiting for us (fuser's rule).
#pragma once
#include <sys/uio.h>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <string_view>
#include "fuse_abi.h"
#include "opcodes.h"

namespace ephemera {

// Where replies go: the /dev/fuse fd the request was read from, or a buffer in unit tests.
class ReplySink {
 public:
  virtual ~ReplySink() = default;
  // Returns 0 or a negative errno (ENOENT: the request was interrupted or aborted meanwhile).
  virtual int Send(const iovec* iov, int count) = 0;
};

class Request {
 public:
  Request(const fuse_in_header* header, const uint8_t* arg, const uint8_t* payload, size_t payload_len)
      : header_(header), arg_(arg), payload_(payload), payload_len_(payload_len) {}

  const fuse_in_header& h() const { return *header_; }
  uint64_t nodeid() const { return header_->nodeid; }
  template <typename T>
  const T& In() const { return *reinterpret_cast<const T*>(arg_); }
  const uint8_t* payload() const { return payload_; }
  size_t payload_len() const { return payload_len_; }

  // The i-th NUL-terminated string of the payload (names, symlink targets, xattr names).
  // False when the payload holds fewer strings: malformed requests are refused, never read past.
  bool String(int index, std::string_view* out) const {
    size_t pos = 0;
    for (int i = 0;; ++i) {
      const void* nul = pos < payload_len_ ? memchr(payload_ + pos, 0, payload_len_ - pos) : nullptr;
      if (!nul) return false;
      size_t end = static_cast<const uint8_t*>(nul) - payload_;
      if (i == index) {
        *out = std::string_view(reinterpret_cast<const char*>(payload_ + pos), end - pos);
        return true;
      }
      pos = end + 1;
    }
  }
  // Bytes following the first `skip_strings` NUL-terminated strings.
  bool After(int skip_strings, const uint8_t** data, size_t* len) const {
    size_t pos = 0;
    for (int i = 0; i < skip_strings; ++i) {
      const void* nul = pos < payload_len_ ? memchr(payload_ + pos, 0, payload_len_ - pos) : nullptr;
      if (!nul) return false;
      pos = static_cast<const uint8_t*>(nul) - payload_ + 1;
    }
    *data = payload_ + pos;
    *len = payload_len_ - pos;
    return true;
  }

 private:
  const fuse_in_header* header_;
  const uint8_t* arg_;
  const uint8_t* payload_;
  size_t payload_len_;
};

class Reply {
 public:
  Reply(ReplySink* sink, uint64_t unique, ReplyShape shape, std::atomic<uint64_t>* unanswered, std::atomic<uint64_t>* bad_replies)
      : sink_(sink), unique_(unique), pending_(shape.replies), shape_(shape), unanswered_(unanswered), bad_replies_(bad_replies) {}
  Reply(const Reply&) = delete;
  Reply& operator=(const Reply&) = delete;
  ~Reply() {
    if (pending_) {
      unanswered_->fetch_add(1, std::memory_order_relaxed);
      Error(EIO);
    }
  }

  bool pending() const { return pending_; }
  int error() const { return error_; }

  void Error(int err) {
    error_ = err;
    Send(nullptr, 0, nullptr, 0);
  }
  void Ok() { Send(nullptr, 0, nullptr, 0); }
  template <typename T>
  void Ok(const T& value) { Send(&value, sizeof(T), nullptr, 0); }
  void Bytes(const void* data, size_t len) { Send(data, len, nullptr, 0); }
  void Bytes2(const void* a, size_t alen, const void* b, size_t blen) { Send(a, alen, b, blen); }
  // Requests with no reply in the protocol (FORGET, BATCH_FORGET, INTERRUPT).
  void NoReply() { pending_ = false; }

 private:
  void Send(const void* a, size_t alen, const void* b, size_t blen) {
    if (!pending_) return;  // a second answer is a bug; the first one stands
    if (!error_ && !shape_.any_size && alen + blen != shape_.size) {
      // The opcode table says what this reply carries; anything else would be misread by the
      // kernel (or refused with EINVAL): answer EIO and count the handler bug.
      bad_replies_->fetch_add(1, std::memory_order_relaxed);
      error_ = EIO;
    }
    pending_ = false;
    fuse_out_header out{};
    out.unique = unique_;
    out.error = error_ ? -error_ : 0;
    iovec iov[3];
    int n = 0;
    iov[n++] = {&out, sizeof(out)};
    if (!error_) {
      if (alen) iov[n++] = {const_cast<void*>(a), alen};
      if (blen) iov[n++] = {const_cast<void*>(b), blen};
    }
    size_t total = 0;
    for (int i = 0; i < n; ++i) total += iov[i].iov_len;
    out.len = static_cast<uint32_t>(total);
    sink_->Send(iov, n);
  }

  ReplySink* sink_;
  uint64_t unique_;
  bool pending_;
  ReplyShape shape_;
  int error_ = 0;
  std::atomic<uint64_t>* unanswered_;
  std::atomic<uint64_t>* bad_replies_;
};

}  // namespace ephemera
