// The internals fixture's own shared library: a hidden function and a static variable
// that no other object can bind to, and an exported function a patch replaces.
__attribute__((used)) static volatile int lib_count;

__attribute__((noipa, visibility("hidden"))) int lib_scale(int x) { return x * 3; }

__attribute__((noipa)) int lib_value(int x) { return lib_scale(x) + 100; }

int lib_count_now(void) { return lib_count; }
