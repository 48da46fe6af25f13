// A wrapper of compute for the prev chain tests: swpatch points compute_prev3 at the
// version below this one in the func stack (the original at the bottom).
// compute_wrap3(x) = prev(x) + 100.
int (*compute_prev3)(int);
__attribute__((noipa)) int compute_wrap3(int x) { return compute_prev3(x) + 100; }
