// The wrapper for relhammer, written with include/swpatch.h (so the header is compiled
// by `make fixtures` and cannot rot): each replacement returns prev(x) + 1000, prev being
// the original, called through its relocated first instructions.
#include <swpatch.h>

SWPATCH_REPLACE(int, loadfirst, int x) { return loadfirst_prev(x) + 1000; }
SWPATCH_REPLACE(int, callfirst, int x) { return callfirst_prev(x) + 1000; }
