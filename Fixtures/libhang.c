// A library whose constructor never returns in time: dlopen in the target hangs, so
// swpatch must abandon the call, restore the borrowed thread and fail cleanly.
#include <unistd.h>
__attribute__((constructor)) static void hang(void) { sleep(30); }
__attribute__((noipa)) int compute_hang(int x) { return x * 5; }
