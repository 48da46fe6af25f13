// A library whose constructor takes a while (argv-free: 150 ms), so that a test can
// kill swpatch while dlopen runs in the target. compute_slow returns x*4 (84 for 21).
#include <time.h>
__attribute__((constructor)) static void slow(void) {
  struct timespec ts = {0, 150 * 1000000L};
  nanosleep(&ts, 0);
}
__attribute__((noipa)) int compute_slow(int x) { return x * 4; }
