// A target that runs another program (argv[1], with the remaining arguments) in its own
// process on SIGUSR1: same pid and start time, a new image. Until then it prints
// `compute=N` like loop.c. Exits cleanly on SIGTERM.
#include <signal.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#define PATCHABLE __attribute__((noipa))

static volatile sig_atomic_t stopping, execing;
static void on_term(int sig) { (void)sig; stopping = 1; }
static void on_usr1(int sig) { (void)sig; execing = 1; }

volatile int scale = 2;
PATCHABLE int compute(int x) { return x * scale; }

int main(int argc, char **argv) {
  if (argc < 2) return 2;
  struct timespec ts = {0, 20 * 1000000L};
  signal(SIGTERM, on_term);
  signal(SIGUSR1, on_usr1);
  setvbuf(stdout, NULL, _IOLBF, 0);
  while (!stopping) {
    if (execing) {
      printf("exec=%s\n", argv[1]);
      execv(argv[1], argv + 1);
      printf("exec failed\n");
      return 1;
    }
    printf("before-exec compute=%d\n", compute(21));
    nanosleep(&ts, NULL);
  }
  return 0;
}
