// Built with -g, then split: the debug info (and the .symtab that names the static
// secret_scale) goes to a separate debug file, and the binary is stripped. Only the
// debug file lets swpatch find secret_scale. Prints every interval (ms, argv[1]).
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t stopping;
static void on_term(int sig) { (void)sig; stopping = 1; }

volatile int factor = 3;
static __attribute__((noipa)) int secret_scale(int x) { return x * factor; }

int main(int argc, char **argv) {
  long interval = argc > 1 ? atol(argv[1]) : 200;
  struct timespec ts = {interval / 1000, (interval % 1000) * 1000000L};
  signal(SIGTERM, on_term);
  signal(SIGINT, on_term);
  setvbuf(stdout, NULL, _IOLBF, 0);
  printf("pid=%d\n", (int)getpid());
  for (long tick = 0; !stopping; tick++) {
    printf("tick=%ld secret=%d\n", tick, secret_scale(7));
    nanosleep(&ts, NULL);
  }
  printf("exiting\n");
  return 0;
}
