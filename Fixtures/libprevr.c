// An atomic-replace wrapper: with every other patch disabled, its prev is the original.
// compute_wrapr(x) = prev(x) + 1000.
int (*compute_prevr)(int);
__attribute__((noipa)) int compute_wrapr(int x) { return compute_prevr(x) + 1000; }
int not_a_pointer; /* 4 bytes: refused as a prev */
