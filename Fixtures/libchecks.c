// Replacement library for the DWARF and entry checks (issue 6): replacements whose
// signatures match or do not match the functions they replace, and a few prototypes
// whose rendering and comparison the tests read straight from this library's DWARF.
#include <stddef.h>
#define PATCH __attribute__((noipa))

// For `int compute(int)` (loop): a different signature, and the same one via a typedef.
PATCH long compute_wide(int x, int y) { (void)y; return (long)x * 4; }
typedef int count_t;
PATCH count_t compute_typedef(const count_t x) { return x * 5; }

// For `static int secret_scale(int)` (split, whose DWARF is in a separate debug file).
PATCH int secret_scale_v2(int x) { return x * 100; }

// For `static int twice(int)` (inlined).
PATCH int twice_v2(int x) { return x + 1000; }

// For the assembly functions of `loopback`.
PATCH int looper_v2(int n) { return n + 500; }
PATCH int countdown_v2(int n) { return n + 600; }

// Prototypes for rendering and comparison.
struct point { int x, y; };
typedef struct point point_t;
typedef struct { int a; } anon_a;
typedef struct { int a; } anon_b;
union number { int i; float f; };
enum color { red, green };
PATCH int area(const struct point *p, size_t n, int (*weigh)(int), ...) { return p->x * (int)n + weigh(0); }
PATCH int area_typedef(point_t const *p, unsigned long n, int (*weigh)(int), ...) { return p->y + (int)n + weigh(1); }
PATCH int area_fixed(const struct point *p, size_t n, int (*weigh)(int)) { return p->x + (int)n + weigh(2); }
PATCH int area_char(const struct point *p, size_t n, char (*weigh)(int), ...) { return p->x + (int)n + weigh(3); }
PATCH void reset(void) {}
PATCH double mix(union number u, enum color c, char *const *names) { return u.f + c + (names ? 1 : 0); }
PATCH int take_a(anon_a *v) { return v->a; }
PATCH int take_b(anon_b *v) { return v->a + 1; }
PATCH int take_pp(int **v) { return **v; }
PATCH int take_p(int *v) { return *v; }
