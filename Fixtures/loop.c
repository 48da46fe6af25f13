// A single-threaded target: prints its functions' results every interval (ms, argv[1],
// default 200) as one parseable line, until SIGTERM.
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define PATCHABLE __attribute__((noipa))

static volatile sig_atomic_t stopping;
static void on_term(int sig) { (void)sig; stopping = 1; }

volatile int scale = 2;
int counter; /* a data symbol: naming it as `old` must be refused */

PATCHABLE int compute(int x) { return x * scale; }
PATCHABLE int foo(void) { return 100 + (scale - 2); }
PATCHABLE int bar(void) { return 200 + (scale - 2); }
PATCHABLE int tiny(int x) { return x; } /* 3 bytes: too short for a jump */
int helper_a(void); /* loop_helper.c: a second static `helper` */
static PATCHABLE int helper(void) { return 1 + (scale - 2); }

int main(int argc, char **argv) {
  long interval = argc > 1 ? atol(argv[1]) : 200;
  struct timespec ts = {interval / 1000, (interval % 1000) * 1000000L};
  signal(SIGTERM, on_term);
  signal(SIGINT, on_term);
  setvbuf(stdout, NULL, _IOLBF, 0);
  printf("pid=%d\n", (int)getpid());
  for (long tick = 0; !stopping; tick++) {
    counter++;
    printf("tick=%ld compute=%d foo=%d bar=%d tiny=%d helper=%d helper2=%d\n", tick, compute(21),
           foo(), bar(), tiny(7), helper(), helper_a());
    nanosleep(&ts, NULL);
  }
  printf("exiting\n");
  return 0;
}
