// ephemera-holder: keeps the /dev/fuse files of one mount (and the lock files of its store
// directories) while no daemon serves it, and hands them to a successor.
//
// The kernel aborts a FUSE connection only when the last open file of the device is closed
// (fs/fuse/dev.c, fuse_dev_release): while this process holds a duplicate of every device file,
// a dead daemon's callers wait in the kernel instead of failing, and the requests it had read stay
// on the device's processing lists until a successor asks for them again (FUSE_NOTIFY_RESEND).
//
// Protocol on a unix stream socket, one message = {u32 type, u32 length} + payload, fds attached
// with SCM_RIGHTS to the first byte:
//   HOLD (owner -> holder)  payload: an opaque blob; fds: what to keep. Answered OKAY.
//   TAKE (successor -> us)  answered FDS_ with the blob and the fds; that connection is the owner.
//                           BUSY while an owner is still connected (never two daemons at once).
//   DONE (owner -> us)      a clean unmount: close everything and exit 0.
// An owner that disconnects without DONE has died: if no successor takes over within --timeout
// seconds, the fds are closed (the kernel aborts the connection, callers get ENOTCONN, as without
// a holder), the --detach paths are lazily unmounted, and the holder exits 1, saying why.
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MSG_HOLD 0x444c4f48u  /* "HOLD" */
#define MSG_TAKE 0x454b4154u  /* "TAKE" */
#define MSG_DONE 0x454e4f44u  /* "DONE" */
#define MSG_OKAY 0x59414b4fu  /* "OKAY" */
#define MSG_FDS 0x5f534446u   /* "FDS_" */
#define MSG_BUSY 0x59535542u  /* "BUSY" */
#define MAX_FDS 64
#define MAX_BLOB 65536
#define MAX_CLIENTS 8
#define MAX_DETACH 8

static int held[MAX_FDS];
static int nheld = 0;
static char blob[MAX_BLOB];
static uint32_t bloblen = 0;
static const char* detach_paths[MAX_DETACH];
static int ndetach = 0;

static void say(const char* fmt, ...) {
  char ts[32];
  time_t now = time(NULL);
  struct tm tm;
  gmtime_r(&now, &tm);
  strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", &tm);
  fprintf(stderr, "%s ephemera-holder[%d]: ", ts, (int)getpid());
  va_list ap;
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  fflush(stderr);
}

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void drop_held(void) {
  for (int i = 0; i < nheld; i++) close(held[i]);
  nheld = 0;
}

static int send_msg(int sock, uint32_t type, const void* data, uint32_t len, const int* fds, int nfds) {
  uint32_t hdr[2] = {type, len};
  struct iovec iov[2] = {{hdr, sizeof hdr}, {(void*)data, len}};
  char cbuf[CMSG_SPACE(sizeof(int) * MAX_FDS)];
  struct msghdr m = {0};
  m.msg_iov = iov;
  m.msg_iovlen = len ? 2 : 1;
  if (nfds > 0) {
    memset(cbuf, 0, sizeof cbuf);
    m.msg_control = cbuf;
    m.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
    struct cmsghdr* c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
    memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
  }
  ssize_t want = (ssize_t)(sizeof hdr + len);
  ssize_t n = sendmsg(sock, &m, MSG_NOSIGNAL);
  if (n < 0) return -1;
  // A short send of a small message on a local socket does not happen in practice; finish it anyway.
  const char* rest = (const char*)data;
  for (ssize_t done = n; done < want;) {
    ssize_t off = done - (ssize_t)sizeof hdr;
    ssize_t r = send(sock, rest + off, (size_t)(want - done), MSG_NOSIGNAL);
    if (r <= 0) return -1;
    done += r;
  }
  return 0;
}

// Reads one message; fds received go to fds/nfds. Returns 0, or -1 on EOF/error/bad message.
static int recv_msg(int sock, uint32_t* type, char* data, uint32_t* len, int* fds, int* nfds) {
  uint32_t hdr[2];
  char cbuf[CMSG_SPACE(sizeof(int) * MAX_FDS)];
  struct iovec iov = {hdr, sizeof hdr};
  struct msghdr m = {0};
  m.msg_iov = &iov;
  m.msg_iovlen = 1;
  m.msg_control = cbuf;
  m.msg_controllen = sizeof cbuf;
  ssize_t n = recvmsg(sock, &m, MSG_CMSG_CLOEXEC);
  *nfds = 0;
  for (struct cmsghdr* c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
      int k = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
      memcpy(fds + *nfds, CMSG_DATA(c), sizeof(int) * k);
      *nfds += k;
    }
  }
  if (n != (ssize_t)sizeof hdr || hdr[1] > MAX_BLOB) {
    for (int i = 0; i < *nfds; i++) close(fds[i]);
    *nfds = 0;
    return -1;
  }
  for (uint32_t got = 0; got < hdr[1];) {
    ssize_t r = read(sock, data + got, hdr[1] - got);
    if (r <= 0) return -1;
    got += (uint32_t)r;
  }
  *type = hdr[0];
  *len = hdr[1];
  return 0;
}

static void give_up(const char* why, int timeout_s) {
  say("%s: no successor took over within %d s; closing %d fds (the kernel aborts the FUSE connection, callers get ENOTCONN)",
      why, timeout_s, nheld);
  drop_held();
  for (int i = 0; i < ndetach; i++) {
    if (umount2(detach_paths[i], MNT_DETACH) == 0) say("detached %s", detach_paths[i]);
  }
}

static void usage(void) {
  fprintf(stderr, "usage: ephemera-holder --socket PATH [--timeout SECONDS] [--detach DIR]... [--pid-file FILE]\n");
  exit(2);
}

int main(int argc, char** argv) {
  const char* sock_path = NULL;
  const char* pid_file = NULL;
  int timeout_s = 30;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--socket") && i + 1 < argc) sock_path = argv[++i];
    else if (!strcmp(argv[i], "--timeout") && i + 1 < argc) timeout_s = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--detach") && i + 1 < argc && ndetach < MAX_DETACH) detach_paths[ndetach++] = argv[++i];
    else if (!strcmp(argv[i], "--pid-file") && i + 1 < argc) pid_file = argv[++i];
    else usage();
  }
  if (!sock_path || timeout_s < 0) usage();
  signal(SIGPIPE, SIG_IGN);
  signal(SIGHUP, SIG_IGN);
  signal(SIGINT, SIG_IGN);

  int lsock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_un addr = {0};
  addr.sun_family = AF_UNIX;
  if (strlen(sock_path) >= sizeof addr.sun_path) {
    say("socket path too long: %s", sock_path);
    return 2;
  }
  strcpy(addr.sun_path, sock_path);
  unlink(sock_path);
  if (lsock < 0 || bind(lsock, (struct sockaddr*)&addr, sizeof addr) != 0 || listen(lsock, 8) != 0) {
    say("cannot listen on %s: %s", sock_path, strerror(errno));
    return 2;
  }
  chmod(sock_path, 0600);
  if (pid_file) {
    FILE* f = fopen(pid_file, "w");
    if (f) fprintf(f, "%d\n", (int)getpid()), fclose(f);
  }
  say("listening on %s (successor timeout %d s)", sock_path, timeout_s);

  int clients[MAX_CLIENTS];
  int nclients = 0;
  int owner = -1;
  // Until the first HOLD the starter counts as a dead owner: a daemon that died before handing
  // anything over must not leave a holder behind.
  int64_t deadline = now_ms() + (int64_t)timeout_s * 1000;
  const char* why = "no daemon handed a connection over";
  int code = 1;
  for (;;) {
    struct pollfd p[MAX_CLIENTS + 1];
    p[0].fd = lsock;
    p[0].events = POLLIN;
    for (int i = 0; i < nclients; i++) p[i + 1].fd = clients[i], p[i + 1].events = POLLIN;
    int wait_ms = -1;
    if (owner < 0) {
      int64_t left = deadline - now_ms();
      if (left <= 0) {
        give_up(why, timeout_s);
        break;
      }
      wait_ms = (int)left;
    }
    int r = poll(p, (nfds_t)(nclients + 1), wait_ms);
    if (r < 0) {
      if (errno == EINTR) continue;
      say("poll: %s", strerror(errno));
      break;
    }
    if (p[0].revents & POLLIN) {
      int c = accept4(lsock, NULL, NULL, SOCK_CLOEXEC);
      if (c >= 0) {
        if (nclients < MAX_CLIENTS) clients[nclients++] = c;
        else close(c);
      }
    }
    int done = 0;
    for (int i = nclients - 1; i >= 0 && !done; i--) {
      if (!(p[i + 1].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      int c = clients[i];
      uint32_t type = 0, len = 0;
      static char buf[MAX_BLOB];
      int fds[MAX_FDS];
      int nfds = 0;
      int ok = recv_msg(c, &type, buf, &len, fds, &nfds) == 0;
      if (!ok) {
        close(c);
        clients[i] = clients[--nclients];
        if (c == owner) {
          owner = -1;
          deadline = now_ms() + (int64_t)timeout_s * 1000;
          why = "the serving daemon is gone";
          say("%s; keeping %d fds for a successor for %d s", why, nheld, timeout_s);
        }
        continue;
      }
      if (type == MSG_HOLD) {
        drop_held();
        memcpy(held, fds, sizeof(int) * nfds);
        nheld = nfds;
        memcpy(blob, buf, len);
        bloblen = len;
        owner = c;
        say("holding %d fds", nheld);
        send_msg(c, MSG_OKAY, NULL, 0, NULL, 0);
      } else if (type == MSG_TAKE) {
        for (int k = 0; k < nfds; k++) close(fds[k]);
        if (owner >= 0 && owner != c) {
          send_msg(c, MSG_BUSY, NULL, 0, NULL, 0);
        } else if (nheld == 0) {
          send_msg(c, MSG_BUSY, NULL, 0, NULL, 0);
        } else if (send_msg(c, MSG_FDS, blob, bloblen, held, nheld) == 0) {
          owner = c;
          say("handed %d fds to a successor", nheld);
        }
      } else if (type == MSG_DONE && c == owner) {
        say("clean unmount: releasing %d fds", nheld);
        drop_held();
        code = 0;
        done = 1;
      } else {
        for (int k = 0; k < nfds; k++) close(fds[k]);
      }
    }
    if (done) break;
  }
  for (int i = 0; i < nclients; i++) close(clients[i]);
  unlink(sock_path);
  if (pid_file) unlink(pid_file);
  return code;
}
