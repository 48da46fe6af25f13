// The target's internals, reached by a patch library by their C names (docs/patch-format.md,
// `externs`): a static function and a static variable of this PIE executable, a static
// `helper` defined here and another in internals_other.c (sympos 1 and 2), and a hidden
// function and a static variable of libinternal.so (linked at start, rpath $ORIGIN).
// Prints every interval (ms, argv[1], default 200):
//   tick=N compute=C counter=K lib=L libcount=M
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

int lib_value(int x);
int lib_count_now(void);
int other_value(int x);

static volatile sig_atomic_t stopping;
static void on_term(int sig) { (void)sig; stopping = 1; }

// Only a replacement changes it: its value proves the replacement's write.
__attribute__((used)) static volatile int counter;
__attribute__((noipa)) static int scale(int x) { return x * 2; }
__attribute__((noipa)) static int helper(int x) { return x + 1; }

__attribute__((noipa)) int compute(int x) { return scale(x) + 1; }

int main(int argc, char **argv) {
  long interval = argc > 1 ? atol(argv[1]) : 200;
  struct timespec ts = {interval / 1000, (interval % 1000) * 1000000L};
  signal(SIGTERM, on_term);
  signal(SIGINT, on_term);
  setvbuf(stdout, NULL, _IOLBF, 0);
  printf("pid=%d helper=%d other=%d\n", (int)getpid(), helper(1), other_value(1));
  for (long tick = 0; !stopping; tick++) {
    int c = compute(21);
    int l = lib_value(1);
    printf("tick=%ld compute=%d counter=%d lib=%d libcount=%d\n", tick, c, counter, l, lib_count_now());
    nanosleep(&ts, NULL);
  }
  printf("exiting\n");
  return 0;
}
