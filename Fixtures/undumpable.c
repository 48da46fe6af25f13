// A process that made itself not dumpable (prctl PR_SET_DUMPABLE 0, as ssh-agent and
// gpg-agent do): its /proc entries become root's, and only a tracer with
// CAP_SYS_PTRACE may attach. It prints `dumpable=0` once, then calls compute() and
// prints its value every 100 ms until SIGTERM.
#include <signal.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#define PATCHABLE __attribute__((noipa))

static volatile sig_atomic_t stopping;
static void on_term(int sig) { (void)sig; stopping = 1; }

volatile int scale = 2;
PATCHABLE int compute(int x) { return x * scale; }

int main(void) {
  signal(SIGTERM, on_term);
  signal(SIGINT, on_term);
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) {
    perror("prctl");
    return 1;
  }
  printf("pid=%d dumpable=%d\n", (int)getpid(), prctl(PR_GET_DUMPABLE, 0, 0, 0, 0));
  struct timespec ts = {0, 100 * 1000000L};
  for (long tick = 0; !stopping; tick++) {
    printf("tick=%ld compute=%d\n", tick, compute(21));
    nanosleep(&ts, NULL);
  }
  printf("exiting\n");
  return 0;
}
