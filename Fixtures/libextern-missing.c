// References a function the internals fixture does not have anywhere: refused before
// the target is touched (unresolved_extern). `maybe_there` is weak: NULL is fine.
extern int no_such_internal(int);
extern int maybe_there(int) __attribute__((weak));

int compute_missing(int x) { return maybe_there ? maybe_there(x) : no_such_internal(x); }
