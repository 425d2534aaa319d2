#include "holder_client.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <cerrno>
#include <cstdint>
#include <cstring>

namespace ephemera {
namespace {

constexpr uint32_t kHold = 0x444c4f48u, kTake = 0x454b4154u, kDone = 0x454e4f44u, kOkay = 0x59414b4fu,
                   kFds = 0x5f534446u, kBusy = 0x59535542u;
constexpr int kMaxFds = 64;
constexpr uint32_t kMaxBlob = 65536;

int Connect(const std::string& path, int* out) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) return ENAMETOOLONG;
  memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s < 0) return errno;
  if (connect(s, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    int e = errno;
    close(s);
    return e;
  }
  *out = s;
  return 0;
}

int Send(int s, uint32_t type, const std::string& data, const std::vector<int>& fds) {
  if (fds.size() > kMaxFds) return EMFILE;
  uint32_t hdr[2] = {type, static_cast<uint32_t>(data.size())};
  iovec iov[2] = {{hdr, sizeof(hdr)}, {const_cast<char*>(data.data()), data.size()}};
  alignas(cmsghdr) char cbuf[CMSG_SPACE(sizeof(int) * kMaxFds)];
  msghdr m{};
  m.msg_iov = iov;
  m.msg_iovlen = data.empty() ? 1 : 2;
  if (!fds.empty()) {
    memset(cbuf, 0, sizeof(cbuf));
    m.msg_control = cbuf;
    m.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    cmsghdr* c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  ssize_t n = sendmsg(s, &m, MSG_NOSIGNAL);
  if (n < 0) return errno;
  return static_cast<size_t>(n) == sizeof(hdr) + data.size() ? 0 : EIO;
}

int Recv(int s, int timeout_ms, uint32_t* type, std::string* data, std::vector<int>* fds) {
  pollfd p{s, POLLIN, 0};
  int r = poll(&p, 1, timeout_ms);
  if (r == 0) return ETIMEDOUT;
  if (r < 0) return errno;
  uint32_t hdr[2];
  alignas(cmsghdr) char cbuf[CMSG_SPACE(sizeof(int) * kMaxFds)];
  iovec iov{hdr, sizeof(hdr)};
  msghdr m{};
  m.msg_iov = &iov;
  m.msg_iovlen = 1;
  m.msg_control = cbuf;
  m.msg_controllen = sizeof(cbuf);
  ssize_t n = recvmsg(s, &m, MSG_CMSG_CLOEXEC);
  for (cmsghdr* c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    const int* got = reinterpret_cast<const int*>(CMSG_DATA(c));
    fds->insert(fds->end(), got, got + k);
  }
  if (n != static_cast<ssize_t>(sizeof(hdr)) || hdr[1] > kMaxBlob) return n == 0 ? ECONNRESET : EPROTO;
  data->resize(hdr[1]);
  for (uint32_t got = 0; got < hdr[1];) {
    ssize_t k = read(s, data->data() + got, hdr[1] - got);
    if (k <= 0) return EPROTO;
    got += static_cast<uint32_t>(k);
  }
  *type = hdr[0];
  return 0;
}

}  // namespace

int HolderHold(const std::string& socket_path, const std::string& blob, const std::vector<int>& fds, int* conn,
               std::string* err) {
  int s = -1;
  if (int e = Connect(socket_path, &s)) {
    *err = "cannot reach the holder at " + socket_path + ": " + strerror(e);
    return e;
  }
  int e = Send(s, kHold, blob, fds);
  uint32_t type = 0;
  std::string reply;
  std::vector<int> none;
  if (!e) e = Recv(s, 5000, &type, &reply, &none);
  for (int fd : none) close(fd);
  if (!e && type != kOkay) e = EPROTO;
  if (e) {
    *err = std::string("the holder did not take the connection: ") + strerror(e);
    close(s);
    return e;
  }
  *conn = s;
  return 0;
}

int HolderTake(const std::string& socket_path, int timeout_ms, std::vector<int>* fds, std::string* blob, int* conn,
               std::string* err) {
  int s = -1;
  if (int e = Connect(socket_path, &s)) {
    *err = "no holder at " + socket_path + ": " + strerror(e);
    return e;
  }
  int e = Send(s, kTake, "", {});
  uint32_t type = 0;
  if (!e) e = Recv(s, timeout_ms, &type, blob, fds);
  if (!e && type == kBusy) e = EBUSY;
  else if (!e && type != kFds) e = EPROTO;
  if (e) {
    for (int fd : *fds) close(fd);
    fds->clear();
    *err = e == EBUSY ? "the holder's connection is still owned by a live daemon"
                      : std::string("the holder did not hand the connection over: ") + strerror(e);
    close(s);
    return e;
  }
  *conn = s;
  return 0;
}

void HolderDone(int conn) {
  if (conn < 0) return;
  Send(conn, kDone, "", {});
  close(conn);
}

}  // namespace ephemera
