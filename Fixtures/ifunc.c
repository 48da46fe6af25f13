// `pick` is an STT_GNU_IFUNC symbol: naming it as `old` must be refused (its resolver
// would be patched); its implementation pick_fast can be patched.
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t stopping;
static void on_term(int sig) { (void)sig; stopping = 1; }

volatile int bump = 2;
__attribute__((noipa)) int pick_fast(int x) { return x + bump; }
__attribute__((noipa)) int pick_slow(int x) { return x + bump - 1 + 1; }
static int (*pick_resolver(void))(int) { return pick_fast; }
int pick(int x) __attribute__((ifunc("pick_resolver")));

int main(int argc, char **argv) {
  long interval = argc > 1 ? atol(argv[1]) : 200;
  struct timespec ts = {interval / 1000, (interval % 1000) * 1000000L};
  signal(SIGTERM, on_term);
  signal(SIGINT, on_term);
  setvbuf(stdout, NULL, _IOLBF, 0);
  printf("pid=%d\n", (int)getpid());
  for (long tick = 0; !stopping; tick++) {
    printf("tick=%ld pick=%d\n", tick, pick(40));
    nanosleep(&ts, NULL);
  }
  printf("exiting\n");
  return 0;
}
