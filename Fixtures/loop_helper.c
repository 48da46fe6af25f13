// A second translation unit with its own static `helper`: two local symbols of one
// name, told apart by sympos.
#define PATCHABLE __attribute__((noipa))
extern volatile int scale;
static PATCHABLE int helper(void) { return 2 + (scale - 2); }
int helper_a(void) { return helper(); }
