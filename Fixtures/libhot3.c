// A third version of hot.c's compute and helper: 300 + 3.
extern volatile int inside[];
extern volatile long spin_ns __attribute__((weak));  // hot.c's slow mode; absent in hotxx
void spin(void) __attribute__((weak));
int helper(int x);

__attribute__((noinline)) int helper_v3(int x) {
  volatile int y = x;
  if (&spin_ns && spin_ns) spin();
  return y + 3;
}

__attribute__((noinline)) int compute_v3(int t) {
  inside[t] = 1;
  volatile int s = 0;
  for (int i = 0; i < 150; i++) s += i;
  int r = helper(0) + 300;
  inside[t] = 0;
  return r;
}
