// The new versions of hot.c's compute and helper: 200 + 2 where the old gave 100 + 1.
// compute_v2 calls helper through its hooked entry, as the old compute does.
#include <pthread.h>
extern volatile int inside[];
extern volatile long spin_ns __attribute__((weak));  // hot.c's slow mode; absent in hotxx
void spin(void) __attribute__((weak));
int helper(int x);

__attribute__((noinline)) int helper_v2(int x) {
  volatile int y = x;
  if (&spin_ns && spin_ns) spin();
  return y + 2;
}

__attribute__((noinline)) int compute_v2(int t) {
  inside[t] = 1;
  volatile int s = 0;
  for (int i = 0; i < 150; i++) s += i;
  int r = helper(0) + 200;
  inside[t] = 0;
  return r;
}
