// Replacement library for the WhereFunctionsLive tests: one replacement per place a
// function can live (own shared library, system library, dlopened plugin, clones, ifunc
// implementation). Each returns a value the fixture's output makes visible.
#define PATCH __attribute__((noipa))
PATCH int shared_value_v2(int x) { return x + 5000; }
PATCH int plugin_value_v2(int x) { return x + 7000; }
PATCH double cbrt_v2(double x) { (void)x; return 42.0; }
PATCH int scaled_v2(int x, int k) { return x * k + 900; }
PATCH int pick_fast_v2(int x) { return x + 60; }
