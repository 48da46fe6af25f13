// Two libraries linked with one build id and of one size (Makefile: --build-id=0x5a…),
// with their functions in swapped order: a symbol cache keyed by build id would hand the
// second one the first one's offsets. compute_sameid returns x*7 here (147 for 21).
__attribute__((noipa)) int compute_sameid(int x) { return x * 7; }
__attribute__((noipa)) int other_sameid(int x) { return x * 8; }
