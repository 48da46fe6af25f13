// See libsameid-a.c: the same names in the other order; compute_sameid returns x*9
// (189 for 21), other_sameid x*8 (168: what a stale cache would run).
__attribute__((noipa)) int other_sameid(int x) { return x * 8; }
__attribute__((noipa)) int compute_sameid(int x) { return x * 9; }
