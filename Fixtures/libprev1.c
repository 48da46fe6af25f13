// A wrapper of compute for the prev chain tests: swpatch points compute_prev1 at the
// version below this one in the func stack (the original at the bottom).
// compute_wrap1(x) = prev(x) + 1.
int (*compute_prev1)(int);
__attribute__((noipa)) int compute_wrap1(int x) { return compute_prev1(x) + 1; }
