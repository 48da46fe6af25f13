// A third version of hot.c's compute and helper: 300 + 3.
extern volatile int inside[];
int helper(int x);

__attribute__((noinline)) int helper_v3(int x) {
  volatile int y = x;
  return y + 3;
}

__attribute__((noinline)) int compute_v3(int t) {
  inside[t] = 1;
  volatile int s = 0;
  for (int i = 0; i < 60; i++) s += i;
  int r = helper(0) + 300;
  inside[t] = 0;
  return r;
}
