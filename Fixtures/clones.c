// Built with -O2: gcc clones `scaled` for its constant argument (scaled.constprop.0,
// maybe with a .cold part). The direct call reaches the clone; the call through a
// pointer reaches `scaled` itself. Prints every interval (ms, argv[1], default 200).
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t stopping;
static void on_term(int sig) { (void)sig; stopping = 1; }

volatile int seven = 7;

__attribute__((noinline)) int scaled(int x, int k) {
  if (__builtin_expect(x < 0, 0)) {
    fprintf(stderr, "scaled: negative %d\n", x);
    abort();
  }
  int acc = 0;
  for (int i = 0; i < k; i++) acc += x;
  return acc;
}

int (*volatile scaled_ptr)(int, int) = scaled;

int main(int argc, char **argv) {
  long interval = argc > 1 ? atol(argv[1]) : 200;
  struct timespec ts = {interval / 1000, (interval % 1000) * 1000000L};
  signal(SIGTERM, on_term);
  signal(SIGINT, on_term);
  setvbuf(stdout, NULL, _IOLBF, 0);
  printf("pid=%d\n", (int)getpid());
  for (long tick = 0; !stopping; tick++) {
    printf("tick=%ld direct=%d pointer=%d\n", tick, scaled(seven, 3), scaled_ptr(seven, 3));
    nanosleep(&ts, NULL);
  }
  printf("exiting\n");
  return 0;
}
