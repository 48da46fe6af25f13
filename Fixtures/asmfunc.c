// A target whose patched function is written in assembly (asmseven.S): prints
// `tick=T seven=N` every interval (argv[1] ms) until SIGTERM.
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

int seven(void);
static volatile sig_atomic_t stopping;
static void on_term(int sig) { (void)sig; stopping = 1; }

int main(int argc, char **argv) {
  long interval = argc > 1 ? atol(argv[1]) : 20;
  struct timespec ts = {interval / 1000, (interval % 1000) * 1000000L};
  signal(SIGTERM, on_term);
  setvbuf(stdout, NULL, _IOLBF, 0);
  for (long tick = 0; !stopping; tick++) {
    printf("tick=%ld seven=%d\n", tick, seven());
    nanosleep(&ts, NULL);
  }
  return 0;
}
