// A process in seccomp strict mode (only read, write, _exit and sigreturn): it calls
// compute() and write()s `tick=N compute=V` every 100 ms, waiting on a timerfd made
// before entering strict mode, and leaves with SYS_exit after argv[1] ticks (default
// 600). It installs no signal handler: strict mode could not run one usefully, and the
// default action of SIGTERM (or the tests' SIGKILL) ends it.
#include <linux/seccomp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <unistd.h>

#define PATCHABLE __attribute__((noipa))

volatile int scale = 2;
PATCHABLE int compute(int x) { return x * scale; }

int main(int argc, char **argv) {
  long ticks = argc > 1 ? atol(argv[1]) : 600;
  int timer = timerfd_create(CLOCK_MONOTONIC, 0);
  struct itimerspec every = {{0, 100 * 1000000L}, {0, 100 * 1000000L}};
  timerfd_settime(timer, 0, &every, NULL);
  printf("pid=%d\n", (int)getpid());
  fflush(stdout);
  if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT) != 0) {
    perror("prctl");
    return 1;
  }
  char line[64];
  for (long tick = 0; tick < ticks; tick++) {
    int n = snprintf(line, sizeof line, "tick=%ld compute=%d\n", tick, compute(21));
    write(1, line, (size_t)n);
    unsigned long long expirations;
    read(timer, &expirations, sizeof expirations);
  }
  syscall(SYS_exit, 0);
}
