// A rebuild of libprev2.c for the --upgrade tests: the same names, another result.
// compute_wrap2(x) = prev(x) + 20.
int (*compute_prev2)(int);
__attribute__((noipa)) int compute_wrap2(int x) { return compute_prev2(x) + 20; }
