// A target whose thread can be parked inside answer(), for the stack consistency
// tests. A parker thread waits for command bytes on a FIFO (argv[2]): on 'p' it calls
// answer(fd), which prints "parked version=1 tid=T" and blocks reading the FIFO; the
// next byte releases it, and the parker prints "left version=V tid=T". Meanwhile main
// prints "tick=N answer=V" every interval (argv[1] ms) with answer(-1), which never
// blocks, so the output shows which version new calls reach. Built three times:
// `parked` (-O1); `parked-cold` (-O2), where gcc moves the parking path, which calls a
// cold function, out of answer into answer.cold; and `parked-nocfi`, without unwind
// tables, whose stacks libdwfl can unwind only up to the first of its own frames.
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define PATCHABLE __attribute__((noipa))

static volatile sig_atomic_t stopping;
static void on_term(int sig) { (void)sig; stopping = 1; }

volatile int version = 1;
volatile int parks;

// Calling a cold function marks the path cold, so -O2 puts it in answer.cold.
__attribute__((cold, noinline)) void parking(void) { parks++; }

PATCHABLE int answer(int fd) {
  if (fd >= 0) {
    char c;
    parking();
    printf("parked version=1 tid=%ld\n", (long)syscall(SYS_gettid));
    if (read(fd, &c, 1) != 1) return -1;
  }
  return version;
}

static void *parker(void *arg) {
  int fd = *(int *)arg;
  char c;
  for (;;) {
    // Waiting for a command happens outside answer(): only 'p' parks inside it.
    if (read(fd, &c, 1) != 1 || c != 'p') continue;
    int v = answer(fd);
    printf("left version=%d tid=%ld\n", v, (long)syscall(SYS_gettid));
  }
  return NULL;
}

int main(int argc, char **argv) {
  long interval = argc > 1 ? atol(argv[1]) : 200;
  if (argc < 3) {
    fprintf(stderr, "usage: parked INTERVAL_MS FIFO\n");
    return 2;
  }
  // O_RDWR: opening a FIFO this way never blocks, and the test can open it for writing.
  static int fd;
  fd = open(argv[2], O_RDWR);
  if (fd < 0) {
    perror(argv[2]);
    return 2;
  }
  struct timespec ts = {interval / 1000, (interval % 1000) * 1000000L};
  signal(SIGTERM, on_term);
  signal(SIGINT, on_term);
  setvbuf(stdout, NULL, _IOLBF, 0);
  pthread_t thread;
  pthread_create(&thread, NULL, parker, &fd);
  printf("pid=%d\n", (int)getpid());
  for (long tick = 0; !stopping; tick++) {
    printf("tick=%ld answer=%d\n", tick, answer(-1));
    nanosleep(&ts, NULL);
  }
  // The parker may be blocked for good: exit without joining it.
  printf("exiting\n");
  return 0;
}
