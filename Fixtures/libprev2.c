// A wrapper of compute for the prev chain tests: swpatch points compute_prev2 at the
// version below this one in the func stack (the original at the bottom).
// compute_wrap2(x) = prev(x) + 10.
int (*compute_prev2)(int);
__attribute__((noipa)) int compute_wrap2(int x) { return compute_prev2(x) + 10; }
