// A target that forks on SIGUSR1 (after it may have been patched): parent and child go
// on calling compute and print `who=PID compute=N`; the parent prints `child=PID` and
// reaps its child. Each exits cleanly on SIGTERM.
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PATCHABLE __attribute__((noipa))

static volatile sig_atomic_t stopping, forking;
static void on_term(int sig) { (void)sig; stopping = 1; }
static void on_usr1(int sig) { (void)sig; forking = 1; }

volatile int scale = 2;
PATCHABLE int compute(int x) { return x * scale; }

int main(int argc, char **argv) {
  long interval = argc > 1 ? atol(argv[1]) : 20;
  struct timespec ts = {interval / 1000, (interval % 1000) * 1000000L};
  signal(SIGTERM, on_term);
  signal(SIGUSR1, on_usr1);
  setvbuf(stdout, NULL, _IOLBF, 0);
  pid_t child = 0;
  while (!stopping) {
    if (forking) {
      forking = 0;
      pid_t p = fork();
      if (p == 0) {
        child = 0;
      } else if (p > 0) {
        child = p;
        printf("child=%d\n", (int)p);
      }
    }
    printf("who=%d compute=%d\n", (int)getpid(), compute(21));
    nanosleep(&ts, NULL);
  }
  if (child > 0) {
    kill(child, SIGTERM);
    waitpid(child, NULL, 0);
  }
  return 0;
}
