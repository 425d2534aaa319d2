/*
 * Timed file-system loops that fio cannot express, for the fio suite.
 *
 * Why C and not Node: a create+write+close+unlink of a 4 KiB file costs ~15 us on tmpfs; Node's
 * per-call overhead (libuv thread pool hop, promise, Buffer) is of the same order and would be
 * measured instead of the file system. Why not fio: fio lays files out before the timed region
 * and times only the I/O calls (clat/lat), never open(O_CREAT) and close(); with
 * create_on_open=1 the create is still untimed and close() (where a FUSE file system flushes and
 * releases) is never timed. Here one clock brackets the whole create -> write -> close.
 *
 * Usage (one JSON line on stdout, errors on stderr with exit 1):
 *   bench_io fresh DIR SIZE_MIB SECONDS   create, write SIZE_MIB in 1 MiB writes, close; repeat
 *                                          until SECONDS of timed work; unlink (untimed) between files
 *   bench_io small DIR COUNT              COUNT x (create + 4 KiB write + close), then COUNT unlinks
 *   bench_io keep  PATH SIZE_MIB          create and write a file and leave it (for RSS probes)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MIB (1024L * 1024L)

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what, const char *path) {
  fprintf(stderr, "bench_io: %s %s: %s\n", what, path, strerror(errno));
  exit(1);
}

static void write_all(int fd, const char *buf, size_t len, const char *path) {
  while (len > 0) {
    ssize_t n = write(fd, buf, len);
    if (n < 0) {
      if (errno == EINTR) continue;
      die("write", path);
    }
    buf += n;
    len -= (size_t)n;
  }
}

static void write_file(const char *path, const char *chunk, long size_mib) {
  int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0644);
  if (fd < 0) die("open", path);
  for (long i = 0; i < size_mib; i++) write_all(fd, chunk, MIB, path);
  if (close(fd) != 0) die("close", path);
}

static char *filled_chunk(size_t len) {
  char *chunk = malloc(len);
  if (!chunk) {
    fprintf(stderr, "bench_io: out of memory\n");
    exit(1);
  }
  /* Non-zero bytes so no layer can treat the data as holes. */
  for (size_t i = 0; i < len; i++) chunk[i] = (char)(i * 131 + 7);
  return chunk;
}

static int fresh(const char *dir, long size_mib, double seconds) {
  char path[4096];
  snprintf(path, sizeof path, "%s/fresh-file.dat", dir);
  char *chunk = filled_chunk(MIB);
  long files = 0;
  double timed = 0;
  /* At least one file even if SECONDS is tiny, so the figure always exists. */
  while (files == 0 || timed < seconds) {
    double t0 = now_s();
    write_file(path, chunk, size_mib);
    timed += now_s() - t0;
    files++;
    if (unlink(path) != 0) die("unlink", path);
  }
  printf("{\"files\":%ld,\"bytes\":%ld,\"seconds\":%.9f}\n", files, files * size_mib * MIB, timed);
  free(chunk);
  return 0;
}

static int small(const char *dir, long count) {
  char path[4096];
  char *chunk = filled_chunk(4096);
  double t0 = now_s();
  for (long i = 0; i < count; i++) {
    snprintf(path, sizeof path, "%s/small-%ld", dir, i);
    int fd = open(path, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644);
    if (fd < 0) die("open", path);
    write_all(fd, chunk, 4096, path);
    if (close(fd) != 0) die("close", path);
  }
  double t1 = now_s();
  for (long i = 0; i < count; i++) {
    snprintf(path, sizeof path, "%s/small-%ld", dir, i);
    if (unlink(path) != 0) die("unlink", path);
  }
  double t2 = now_s();
  printf("{\"files\":%ld,\"create_seconds\":%.9f,\"unlink_seconds\":%.9f}\n", count, t1 - t0, t2 - t1);
  free(chunk);
  return 0;
}

int main(int argc, char **argv) {
  if (argc == 5 && strcmp(argv[1], "fresh") == 0) return fresh(argv[2], atol(argv[3]), atof(argv[4]));
  if (argc == 4 && strcmp(argv[1], "small") == 0) return small(argv[2], atol(argv[3]));
  if (argc == 4 && strcmp(argv[1], "keep") == 0) {
    char *chunk = filled_chunk(MIB);
    write_file(argv[2], chunk, atol(argv[3]));
    free(chunk);
    printf("{\"bytes\":%ld}\n", atol(argv[3]) * MIB);
    return 0;
  }
  fprintf(stderr, "usage: bench_io fresh DIR SIZE_MIB SECONDS | small DIR COUNT | keep PATH SIZE_MIB\n");
  return 2;
}
