// A patch library whose constructor aborts: loaded into a target it would take the
// target down (or leave the loader lock held by a dead thread). swpatch refuses it
// unless --allow-constructors. compute_ctor returns x*6.
#include <stdlib.h>
__attribute__((constructor)) static void boom(void) { abort(); }
__attribute__((noipa)) int compute_ctor(int x) { return x * 6; }
