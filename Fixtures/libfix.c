// Replacement library for fix-compute.json: compute triples instead of doubling.
__attribute__((noipa)) int compute_v2(int x) { return x * 3; }
__attribute__((noipa)) int helper_v2(void) { return 42; }
int not_a_function = 5;
