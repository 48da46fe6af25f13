// The --all-of bench's target (make bench): many copies of one small program, each
// calling bench_f0 (patched by bench-1.json) ten times a second and otherwise asleep, so
// that 1,000 of them leave a 2-core machine to the patcher. Exits cleanly on SIGTERM.
#include <signal.h>
#include <time.h>

static volatile int scale = 3, offset = 1;
static volatile sig_atomic_t stopping;
volatile long sink;

__attribute__((noipa)) int bench_f0(int x) { return x * scale + offset + 0; }

static void on_term(int sig) {
  (void)sig;
  stopping = 1;
}

int main(void) {
  signal(SIGTERM, on_term);
  signal(SIGINT, on_term);
  struct timespec nap = {0, 100 * 1000 * 1000};
  while (!stopping) {
    sink += bench_f0(1);
    nanosleep(&nap, NULL);
  }
  return 0;
}
