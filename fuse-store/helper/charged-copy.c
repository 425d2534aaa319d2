/*
 * charged-copy: copies file ranges on behalf of the ephemera daemon, from inside a container's
 * memory cgroup, so the pages it writes into the memory tier (tmpfs/memfd files) are charged to the
 * container and not to the daemon. A page's charge follows the mm of the process that faults it in,
 * not the thread, so a thread of the daemon cannot do this; a process living in the cgroup can.
 *
 * Usage: charged-copy CGROUP_DIR PEER_PID
 *   Joins CGROUP_DIR (writes its pid to CGROUP_DIR/cgroup.procs) before it allocates anything it will
 *   keep; the pages touched until then (stack, libc) stay with the parent's cgroup and are a few KiB.
 *   Then serves requests on fd 0, answers on fd 1, and exits 0 when fd 0 reaches EOF.
 *
 * Wire format (host byte order; both ends run on the same machine):
 *   hello    (helper → daemon, once): struct reply { id = 0, result = pid, or -errno if it could not
 *            join the cgroup or open the peer; it then exits 1 }
 *   request  (daemon → helper): struct request, 40 bytes. The two files are either attached to the
 *            message with SCM_RIGHTS (when fd 0 is a Unix socket and the sender can do that), or taken
 *            from the peer's fd table with pidfd_getfd(2) — Node cannot send SCM_RIGHTS, and
 *            pidfd_getfd duplicates the peer's open file description, so nothing is reopened.
 *   reply    (helper → daemon): struct reply, 16 bytes: bytes copied (may be short at end of source),
 *            or -errno.
 * Copies use explicit offsets, so the file positions shared with the daemon never move.
 *
 * Usage: charged-copy --fallocate CGROUP_DIR MODE OFFSET LENGTH   (the file on fd 3)
 *   One allocating fallocate(2) on a memory-tier file, from inside the container's cgroup, for the
 *   same reason. Exit status: 0, the errno fallocate failed with, or FALLOCATE_NOT_JOINED when the
 *   cgroup could not be joined (the daemon then allocates itself and counts it as uncharged).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_getfd
#define SYS_pidfd_getfd 438
#endif

struct request {
  uint64_t id;
  int32_t src_fd; /* in the peer's fd table; ignored when fds come with SCM_RIGHTS */
  int32_t dst_fd;
  uint64_t src_offset;
  uint64_t dst_offset;
  uint64_t length;
};

struct reply {
  uint64_t id;
  int64_t result;
};

_Static_assert(sizeof(struct request) == 40, "request is 40 bytes on the wire");
_Static_assert(sizeof(struct reply) == 16, "reply is 16 bytes on the wire");

enum { FALLBACK_BUFFER = 1 << 20 };

static char *fallback_buffer;

static int write_all(int fd, const void *data, size_t len) {
  const char *p = data;
  while (len > 0) {
    ssize_t n = write(fd, p, len);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

static int send_reply(uint64_t id, int64_t result) {
  struct reply r = {.id = id, .result = result};
  return write_all(STDOUT_FILENO, &r, sizeof r);
}

static int join_cgroup(const char *dir) {
  char path[PATH_MAX];
  if (snprintf(path, sizeof path, "%s/cgroup.procs", dir) >= (int)sizeof path) return -ENAMETOOLONG;
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) return -errno;
  char pid[32];
  int len = snprintf(pid, sizeof pid, "%d", (int)getpid());
  /* One write: a cgroup file acts on each write(2). */
  ssize_t n = write(fd, pid, (size_t)len);
  int err = n == len ? 0 : (n < 0 ? -errno : -EIO);
  close(fd);
  return err;
}

/*
 * Reads one request. Returns 1 with the request (and up to two received fds, else -1), 0 at EOF,
 * -errno on failure. fds arrive with the first byte of a message, so only the first chunk of a
 * request can carry them.
 */
static int read_request(struct request *req, int fds[2]) {
  static int is_socket = 1;
  size_t got = 0;
  fds[0] = fds[1] = -1;
  while (got < sizeof *req) {
    ssize_t n;
    if (is_socket) {
      union {
        struct cmsghdr header;
        char space[CMSG_SPACE(2 * sizeof(int))];
      } control;
      struct iovec iov = {.iov_base = (char *)req + got, .iov_len = sizeof *req - got};
      struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = &control, .msg_controllen = sizeof control};
      n = recvmsg(STDIN_FILENO, &msg, MSG_CMSG_CLOEXEC);
      if (n < 0 && errno == ENOTSOCK) {
        is_socket = 0;
        continue;
      }
      if (n >= 0) {
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
          if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
          size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
          int received[2] = {-1, -1};
          memcpy(received, CMSG_DATA(c), (count > 2 ? 2 : count) * sizeof(int));
          /* Extra fds beyond two would leak; the protocol never sends more. */
          if (got == 0 && count == 2) {
            fds[0] = received[0];
            fds[1] = received[1];
          } else {
            for (size_t i = 0; i < count && i < 2; i++) close(received[i]);
          }
        }
      }
    } else {
      n = read(STDIN_FILENO, (char *)req + got, sizeof *req - got);
    }
    if (n < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    if (n == 0) return got == 0 ? 0 : -EPROTO;
    got += (size_t)n;
  }
  return 1;
}

static int64_t copy_with_read_write(int src, int dst, off_t src_off, off_t dst_off, uint64_t length, int64_t done) {
  if (fallback_buffer == NULL) {
    fallback_buffer = malloc(FALLBACK_BUFFER);
    if (fallback_buffer == NULL) return -ENOMEM;
  }
  src_off += done;
  dst_off += done;
  while ((uint64_t)done < length) {
    size_t want = length - (uint64_t)done < FALLBACK_BUFFER ? (size_t)(length - (uint64_t)done) : FALLBACK_BUFFER;
    ssize_t n = pread(src, fallback_buffer, want, src_off);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    if (n == 0) break;
    ssize_t written = 0;
    while (written < n) {
      ssize_t w = pwrite(dst, fallback_buffer + written, (size_t)(n - written), dst_off + written);
      if (w < 0) {
        if (errno == EINTR) continue;
        return -errno;
      }
      written += w;
    }
    src_off += n;
    dst_off += n;
    done += n;
  }
  return done;
}

/*
 * copy_file_range first (no user-space copy); fall back to pread/pwrite where the kernel refuses.
 * From ext4 (the disk tier) to tmpfs this kernel answers EXDEV (cross-filesystem copies are refused
 * since 5.19), so the fallback is the path that runs: 64 MiB in ~180 ms here. sendfile/splice would
 * move the destination's file position, which is shared with the daemon through pidfd_getfd.
 */
static int64_t copy_range(int src, int dst, uint64_t src_offset, uint64_t dst_offset, uint64_t length) {
  loff_t src_off = (loff_t)src_offset;
  loff_t dst_off = (loff_t)dst_offset;
  int64_t done = 0;
  while ((uint64_t)done < length) {
    size_t chunk = length - (uint64_t)done > (1u << 30) ? (1u << 30) : (size_t)(length - (uint64_t)done);
    ssize_t n = copy_file_range(src, &src_off, dst, &dst_off, chunk, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EXDEV || errno == EINVAL || errno == EOPNOTSUPP || errno == ENOSYS || errno == EBADF) {
        return copy_with_read_write(src, dst, (off_t)src_offset, (off_t)dst_offset, length, done);
      }
      return -errno;
    }
    if (n == 0) break;
    done += n;
  }
  return done;
}

enum { FALLOCATE_NOT_JOINED = 200, FALLOCATE_USAGE = 201 };

static int parse_u64(const char *s, unsigned long long *out) {
  char *end = NULL;
  errno = 0;
  *out = strtoull(s, &end, 10);
  return errno == 0 && end != s && *end == '\0' && s[0] != '-';
}

static int fallocate_main(int argc, char **argv) {
  unsigned long long mode, offset, length;
  if (argc != 6 || !parse_u64(argv[3], &mode) || !parse_u64(argv[4], &offset) || !parse_u64(argv[5], &length) ||
      mode > INT_MAX || offset > LLONG_MAX || length > LLONG_MAX) {
    fprintf(stderr, "usage: %s --fallocate CGROUP_DIR MODE OFFSET LENGTH (file on fd 3)\n", argv[0]);
    return FALLOCATE_USAGE;
  }
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (join_cgroup(argv[2]) < 0) return FALLOCATE_NOT_JOINED;
  while (fallocate(3, (int)mode, (off_t)offset, (off_t)length) != 0) {
    if (errno != EINTR) return errno;
  }
  return 0;
}

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "--fallocate") == 0) return fallocate_main(argc, argv);
  if (argc != 3) {
    fprintf(stderr, "usage: %s CGROUP_DIR PEER_PID\n", argv[0]);
    return 2;
  }
  /* Never outlive the daemon, and never die of a closed reply pipe (write reports EPIPE instead). */
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  signal(SIGPIPE, SIG_IGN);

  int err = join_cgroup(argv[1]);
  if (err < 0) {
    send_reply(0, err);
    return 1;
  }
  char *end = NULL;
  long peer = strtol(argv[2], &end, 10);
  if (end == argv[2] || *end != '\0' || peer <= 0) {
    send_reply(0, -EINVAL);
    return 1;
  }
  int pidfd = (int)syscall(SYS_pidfd_open, (pid_t)peer, 0);
  if (pidfd < 0) {
    send_reply(0, -errno);
    return 1;
  }
  if (send_reply(0, (int64_t)getpid()) < 0) return 1;

  for (;;) {
    struct request req;
    int fds[2];
    int status = read_request(&req, fds);
    if (status == 0) return 0;
    if (status < 0) {
      fprintf(stderr, "charged-copy: reading a request: %s\n", strerror(-status));
      return 1;
    }
    int src = fds[0];
    int dst = fds[1];
    int64_t result = 0;
    if (src < 0) {
      src = (int)syscall(SYS_pidfd_getfd, pidfd, req.src_fd, 0);
      if (src < 0) result = -errno;
    }
    if (result == 0 && dst < 0) {
      dst = (int)syscall(SYS_pidfd_getfd, pidfd, req.dst_fd, 0);
      if (dst < 0) result = -errno;
    }
    if (result == 0) result = copy_range(src, dst, req.src_offset, req.dst_offset, req.length);
    if (src >= 0) close(src);
    if (dst >= 0) close(dst);
    if (send_reply(req.id, result) < 0) return 1;
  }
}
