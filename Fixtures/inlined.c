// Built with -O2: `twice` is inlined at the three lines marked INLINE-SITE, and also
// kept out of line because its address is taken. Patching `twice` changes only the
// calls through the pointer; the inlined copies keep the old code.
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t stopping;
static void on_term(int sig) { (void)sig; stopping = 1; }

volatile int bump = 1;
static inline __attribute__((always_inline)) int twice(int x) { return 2 * x + bump; }
int (*volatile twice_ptr)(int) = twice;

__attribute__((noinline)) int sum_twice(int a, int b) {
  return twice(a) + twice(b);  // INLINE-SITE (two calls on this line)
}

int main(int argc, char **argv) {
  long interval = argc > 1 ? atol(argv[1]) : 200;
  struct timespec ts = {interval / 1000, (interval % 1000) * 1000000L};
  signal(SIGTERM, on_term);
  signal(SIGINT, on_term);
  setvbuf(stdout, NULL, _IOLBF, 0);
  printf("pid=%d\n", (int)getpid());
  for (long tick = 0; !stopping; tick++) {
    int direct = twice(10);  // INLINE-SITE
    printf("tick=%ld direct=%d pointer=%d sum=%d\n", tick, direct, twice_ptr(10), sum_twice(1, 2));
    nanosleep(&ts, NULL);
  }
  printf("exiting\n");
  return 0;
}
