// A target blocked in one system call while it is patched, which must not notice:
//   blocked read FIFO N    read() exactly N bytes from the FIFO; print their FNV-1a hash
//   blocked sleep MS       nanosleep(MS) again and again; print how long each took
//   blocked accept PATH    accept() on a Unix socket at PATH; print the line received
// Every report carries eintr= (interrupted calls seen) and compute= (42 original, 63
// after libfix's compute_v2), the latter read after the call returns.
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define PATCHABLE __attribute__((noipa))
volatile int scale = 2;
PATCHABLE int compute(int x) { return x * scale; }

static int eintr;

static long now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1000L + t.tv_nsec / 1000000L;
}

static int do_read(const char *path, long n) {
  int fd = open(path, O_RDWR); /* O_RDWR: opening a FIFO does not wait for a writer */
  if (fd < 0) return perror("open"), 1;
  char *buf = malloc(n);
  printf("ready compute=%d\n", compute(21));
  long got = 0;
  while (got < n) {
    ssize_t r = read(fd, buf + got, n - got);
    if (r < 0 && errno == EINTR) eintr++;
    if (r < 0) return printf("error=%d\n", errno), 1;
    got += r;
  }
  uint64_t h = 1469598103934665603ULL;
  for (long i = 0; i < n; i++) h = (h ^ (unsigned char)buf[i]) * 1099511628211ULL;
  printf("read=%ld hash=%llx eintr=%d compute=%d\n", got, (unsigned long long)h, eintr, compute(21));
  return 0;
}

static _Noreturn void do_sleep(long ms) {
  printf("ready compute=%d\n", compute(21));
  for (long i = 0;; i++) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L}, rem;
    long start = now_ms();
    int r = nanosleep(&ts, &rem);
    if (r != 0 && errno == EINTR) eintr++;
    printf("sleep=%ld slept_ms=%ld ret=%d eintr=%d compute=%d\n", i, now_ms() - start, r, eintr,
           compute(21));
  }
}

static int do_accept(const char *path) {
  int s = socket(AF_UNIX, SOCK_STREAM, 0);
  struct sockaddr_un a = {.sun_family = AF_UNIX};
  strncpy(a.sun_path, path, sizeof a.sun_path - 1);
  unlink(path);
  if (bind(s, (struct sockaddr *)&a, sizeof a) != 0 || listen(s, 1) != 0) return perror("bind"), 1;
  printf("ready compute=%d\n", compute(21));
  int c = accept(s, NULL, NULL);
  if (c < 0) return printf("error=%d eintr=%d\n", errno, errno == EINTR), 1;
  char line[256] = {0};
  ssize_t r = read(c, line, sizeof line - 1);
  if (r > 0 && line[r - 1] == '\n') line[r - 1] = 0;
  printf("accepted=%s eintr=%d compute=%d\n", line, eintr, compute(21));
  return 0;
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (argc < 3) return 2;
  if (!strcmp(argv[1], "read") && argc > 3) return do_read(argv[2], atol(argv[3]));
  if (!strcmp(argv[1], "sleep")) do_sleep(atol(argv[2]));
  if (!strcmp(argv[1], "accept")) return do_accept(argv[2]);
  return 2;
}
