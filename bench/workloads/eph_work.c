/*
 * The file workloads of the thesis' evaluation, re-implemented as one static program that runs
 * inside function containers (copied in at container start). Every mode makes plain POSIX calls
 * on the directory it is given (the container's /tmp) and prints one JSON line of timings.
 *
 *   impact DIR SIZE_MIB OPS   test_impact: two files, 8 KiB fill, OPS unaligned random 8 KiB reads
 *                             per file, then OPS random writes; files reopened without O_TRUNC
 *   seqio  DIR SIZE_MIB OPS   sequential 8 KiB reads then writes, wrapping, on one file (untimed fill)
 *   randio DIR SIZE_MIB OPS   the same with unaligned random offsets
 *   huffman DIR SIZE_MIB      the original "gzip": random bytes written in one write(), then a Huffman
 *                             coder that reads 1 byte per read() (twice) and writes 1 byte per write()
 *   gen FILE SIZE_MIB         the huffman input, for real gzip on the same data
 *   cpu N                     big_factorial: N! in a 500,000-digit array, no file I/O
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define BLOCK 8192

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what, const char *path) {
  fprintf(stderr, "eph_work: %s %s: %s\n", what, path ? path : "", strerror(errno));
  exit(2);
}

/* Fixed-seed generator: the original never seeded rand(), so every run made the same offsets. */
static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t rng(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return rng_state;
}

static void fill_alnum(char *buf, size_t n) {
  static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  for (size_t i = 0; i < n; i++) buf[i] = alphabet[rng() % 64];
}

static int open_rw(const char *path) {
  int fd = open(path, O_RDWR | O_CREAT, 0777);
  if (fd < 0) die("open", path);
  return fd;
}

static void write_all(int fd, const char *buf, size_t n, const char *path) {
  while (n > 0) {
    ssize_t w = write(fd, buf, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      die("write", path);
    }
    buf += w;
    n -= (size_t)w;
  }
}

static void pread_full(int fd, char *buf, size_t n, off_t off, const char *path) {
  ssize_t r = pread(fd, buf, n, off);
  if (r < 0) die("pread", path);
}

static void pwrite_full(int fd, const char *buf, size_t n, off_t off, const char *path) {
  ssize_t w = pwrite(fd, buf, n, off);
  if (w < 0) die("pwrite", path);
}

static void fill_file(const char *path, off_t size, const char *block) {
  int fd = open_rw(path);
  for (off_t done = 0; done < size; done += BLOCK) write_all(fd, block, BLOCK, path);
  if (close(fd) != 0) die("close", path);
}

static int impact(const char *dir, long size_mib, long ops) {
  char path[2][4096];
  char block[BLOCK];
  off_t size = (off_t)size_mib << 20;
  fill_alnum(block, BLOCK);
  for (int f = 0; f < 2; f++) snprintf(path[f], sizeof path[f], "%s/output%d.txt", dir, f + 1);
  double t0 = now_s();
  for (int f = 0; f < 2; f++) fill_file(path[f], size, block);
  double t1 = now_s();
  for (int f = 0; f < 2; f++) {
    int fd = open_rw(path[f]);
    for (long i = 0; i < ops; i++) pread_full(fd, block, BLOCK, (off_t)(rng() % (uint64_t)(size - BLOCK)), path[f]);
    if (close(fd) != 0) die("close", path[f]);
  }
  double t2 = now_s();
  for (int f = 0; f < 2; f++) {
    int fd = open_rw(path[f]);
    for (long i = 0; i < ops; i++) pwrite_full(fd, block, BLOCK, (off_t)(rng() % (uint64_t)(size - BLOCK)), path[f]);
    if (close(fd) != 0) die("close", path[f]);
  }
  double t3 = now_s();
  printf("{\"fill_s\":%.6f,\"read_s\":%.6f,\"write_s\":%.6f,\"seconds\":%.6f}\n", t1 - t0, t2 - t1, t3 - t2, t3 - t0);
  return 0;
}

static int diskio(const char *dir, long size_mib, long ops, int random_offsets) {
  char path[4096];
  char block[BLOCK];
  off_t size = (off_t)size_mib << 20;
  off_t blocks = size / BLOCK;
  snprintf(path, sizeof path, "%s/output1.txt", dir);
  fill_alnum(block, BLOCK);
  fill_file(path, size, block);
  double t[3];
  for (int phase = 0; phase < 2; phase++) {
    int fd = open_rw(path);
    t[phase] = now_s();
    for (long i = 0; i < ops; i++) {
      off_t off = random_offsets ? (off_t)(rng() % (uint64_t)(size - BLOCK)) : (off_t)(i % blocks) * BLOCK;
      if (phase == 0) pread_full(fd, block, BLOCK, off, path);
      else pwrite_full(fd, block, BLOCK, off, path);
    }
    if (close(fd) != 0) die("close", path);
    t[phase + 1] = now_s();
  }
  double read_s = t[1] - t[0], write_s = t[2] - t[1];
  double mib = (double)ops * BLOCK / (1 << 20);
  printf("{\"read_ms\":%.3f,\"write_ms\":%.3f,\"read_mibs\":%.1f,\"write_mibs\":%.1f,\"seconds\":%.6f}\n", read_s * 1e3, write_s * 1e3,
         mib / read_s, mib / write_s, read_s + write_s);
  return 0;
}

static char *random_bytes(size_t n) {
  char *buf = malloc(n);
  if (!buf) die("malloc", NULL);
  for (size_t i = 0; i < n; i += 8) {
    uint64_t r = rng();
    memcpy(buf + i, &r, n - i < 8 ? n - i : 8);
  }
  return buf;
}

static int gen(const char *path, long size_mib) {
  size_t n = (size_t)size_mib << 20;
  char *buf = random_bytes(n);
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0666);
  if (fd < 0) die("open", path);
  write_all(fd, buf, n, path);
  if (close(fd) != 0) die("close", path);
  free(buf);
  printf("{\"bytes\":%zu}\n", n);
  return 0;
}

/* Huffman tree over byte frequencies; codes kept as '0'/'1' strings (depth <= 255). */
struct node { uint64_t weight; int left, right; };

static int huffman(const char *dir, long size_mib) {
  char in_path[4096], out_path[4096];
  snprintf(in_path, sizeof in_path, "%s/my_test_output1.txt", dir);
  snprintf(out_path, sizeof out_path, "%s/my_test_result1.gz", dir);
  size_t n = (size_t)size_mib << 20;
  char *buf = random_bytes(n);
  double t0 = now_s();
  int fd = open(in_path, O_WRONLY | O_CREAT | O_TRUNC, 0666);
  if (fd < 0) die("open", in_path);
  write_all(fd, buf, n, in_path);
  if (close(fd) != 0) die("close", in_path);
  double t1 = now_s();
  free(buf);

  uint64_t freq[256] = {0};
  unsigned char c;
  int in = open(in_path, O_RDONLY);
  if (in < 0) die("open", in_path);
  ssize_t r;
  while ((r = read(in, &c, 1)) == 1) freq[c]++;
  if (r < 0) die("read", in_path);

  struct node nodes[511];
  int alive[511], count = 0, total = 0;
  for (int i = 0; i < 256; i++) {
    nodes[total] = (struct node){freq[i] ? freq[i] : 1, -1, -1};
    alive[count++] = total++;
  }
  while (count > 1) {
    int a = 0, b = 1;
    if (nodes[alive[b]].weight < nodes[alive[a]].weight) { a = 1; b = 0; }
    for (int i = 2; i < count; i++) {
      if (nodes[alive[i]].weight < nodes[alive[a]].weight) { b = a; a = i; }
      else if (nodes[alive[i]].weight < nodes[alive[b]].weight) b = i;
    }
    nodes[total] = (struct node){nodes[alive[a]].weight + nodes[alive[b]].weight, alive[a], alive[b]};
    int hi = a > b ? a : b, lo = a < b ? a : b;
    alive[hi] = alive[--count];
    alive[lo] = total++;
  }
  static char codes[256][257];
  struct { int node; int depth; char path[257]; } stack[512];
  int sp = 0;
  stack[sp].node = alive[0];
  stack[sp].depth = 0;
  stack[sp++].path[0] = 0;
  while (sp > 0) {
    sp--;
    int nd = stack[sp].node, depth = stack[sp].depth;
    char path[257];
    memcpy(path, stack[sp].path, (size_t)depth + 1);
    if (nodes[nd].left < 0) {
      memcpy(codes[nd], path, (size_t)depth + 1);
      continue;
    }
    for (int side = 0; side < 2 && depth < 256; side++) {
      stack[sp].node = side ? nodes[nd].right : nodes[nd].left;
      stack[sp].depth = depth + 1;
      memcpy(stack[sp].path, path, (size_t)depth);
      stack[sp].path[depth] = side ? '1' : '0';
      stack[sp].path[depth + 1] = 0;
      sp++;
    }
  }

  int out = open(out_path, O_RDWR | O_CREAT | O_TRUNC, 0666);
  if (out < 0) die("open", out_path);
  /* The header (frequencies, bit count) is a hole until the end, as in the original. */
  off_t header = (off_t)(sizeof freq + sizeof(uint64_t));
  if (lseek(out, header, SEEK_SET) < 0) die("lseek", out_path);
  if (lseek(in, 0, SEEK_SET) < 0) die("lseek", in_path);
  unsigned char acc = 0;
  int bits = 0;
  uint64_t total_bits = 0, out_bytes = (uint64_t)header;
  while ((r = read(in, &c, 1)) == 1) {
    for (const char *p = codes[c]; *p; p++) {
      acc = (unsigned char)((acc << 1) | (*p == '1'));
      total_bits++;
      if (++bits == 8) {
        if (write(out, &acc, 1) != 1) die("write", out_path);
        out_bytes++;
        acc = 0;
        bits = 0;
      }
    }
  }
  if (r < 0) die("read", in_path);
  if (bits > 0) {
    acc = (unsigned char)(acc << (8 - bits));
    if (write(out, &acc, 1) != 1) die("write", out_path);
    out_bytes++;
  }
  if (lseek(out, 0, SEEK_SET) < 0) die("lseek", out_path);
  write_all(out, (const char *)freq, sizeof freq, out_path);
  write_all(out, (const char *)&total_bits, sizeof total_bits, out_path);
  if (close(out) != 0 || close(in) != 0) die("close", out_path);
  double t2 = now_s();
  printf("{\"disk_ms\":%.3f,\"compress_ms\":%.3f,\"out_bytes\":%llu,\"seconds\":%.6f}\n", (t1 - t0) * 1e3, (t2 - t1) * 1e3,
         (unsigned long long)out_bytes, t2 - t0);
  return 0;
}

static int cpu(long n) {
  enum { DIGITS = 500000 };
  static unsigned char digit[DIGITS];
  double t0 = now_s();
  memset(digit, 0, sizeof digit);
  digit[0] = 1;
  int len = 1;
  for (long k = 2; k <= n; k++) {
    long carry = 0;
    /* The original walks the whole array on every multiply; that is the cost being measured. */
    for (int i = 0; i < DIGITS; i++) {
      long v = digit[i] * k + carry;
      digit[i] = (unsigned char)(v % 10);
      carry = v / 10;
    }
    for (int i = DIGITS - 1; i >= 0; i--)
      if (digit[i]) { len = i + 1; break; }
  }
  double t1 = now_s();
  printf("{\"digits\":%d,\"seconds\":%.6f}\n", len, t1 - t0);
  return 0;
}

static long arg_long(const char *s, const char *what) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || *end || v <= 0) {
    fprintf(stderr, "eph_work: %s must be a positive integer, got %s\n", what, s);
    exit(1);
  }
  return v;
}

int main(int argc, char **argv) {
  const char *mode = argc > 1 ? argv[1] : "";
  if (!strcmp(mode, "impact") && argc == 5) return impact(argv[2], arg_long(argv[3], "SIZE_MIB"), arg_long(argv[4], "OPS"));
  if (!strcmp(mode, "seqio") && argc == 5) return diskio(argv[2], arg_long(argv[3], "SIZE_MIB"), arg_long(argv[4], "OPS"), 0);
  if (!strcmp(mode, "randio") && argc == 5) return diskio(argv[2], arg_long(argv[3], "SIZE_MIB"), arg_long(argv[4], "OPS"), 1);
  if (!strcmp(mode, "huffman") && argc == 4) return huffman(argv[2], arg_long(argv[3], "SIZE_MIB"));
  if (!strcmp(mode, "gen") && argc == 4) return gen(argv[2], arg_long(argv[3], "SIZE_MIB"));
  if (!strcmp(mode, "cpu") && argc == 3) return cpu(arg_long(argv[2], "N"));
  fprintf(stderr, "usage: eph_work impact|seqio|randio DIR SIZE_MIB OPS | huffman DIR SIZE_MIB | gen FILE SIZE_MIB | cpu N\n");
  return 1;
}
