// A replacement that calls the name it replaces (a mistake: that reaches the patched
// entry again). attach warns; the call is never made here (x is never negative).
extern int compute(int);

int compute_recurse(int x) { return x < 0 ? compute(-x) : 5; }
