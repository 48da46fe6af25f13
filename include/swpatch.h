/* swpatch.h: for writing swpatch patch libraries (docs/writing-patches.md).
 *
 * A patch is a shared library of replacement functions and a patch file naming them
 * (docs/patch-format.md). `swpatch new PID FUNCTION` writes a starting one.
 *
 * The rules
 *
 * 1. Same prototype. A replacement is called exactly where the old function was: it
 *    must take the same parameters and return the same type. swpatch compares the two
 *    prototypes from DWARF and refuses a mismatch (`signature_mismatch`) unless
 *    `attach --force`.
 *
 * 2. Build flags: position-independent, a shared object, with DWARF:
 *        cc -fPIC -g -shared -I/usr/local/include -o libfix.so fix.c
 *    -g lets swpatch check the prototype; without it the report says "signature not
 *    checked". Optimise as you like (-O2).
 *
 * 3. Calling the old code: through `prev`, never by its name. Once patched, the old
 *    function's entry jumps to the top of its func stack, which is your replacement: a
 *    replacement that calls the old function by name calls itself, for ever (a redis
 *    patched that way spun at 100% CPU writing 1.6 million log lines, and could not be
 *    disabled under stack consistency because a thread was always inside). Declare a
 *    `prev` pointer instead (SWPATCH_PREV, or SWPATCH_REPLACE which declares both) and
 *    name it in the patch file ("prev": "compute_prev"): before the replacement can
 *    run, swpatch points it at the version directly below it in the func stack, which
 *    is the original function (its first instructions relocated) when nothing else is
 *    below, and keeps it right whenever patches below are disabled or enabled.
 *
 * 4. Constructors. The library is loaded into the running target with dlopen, on a
 *    borrowed thread, while every other thread is stopped. swpatch refuses a library
 *    that runs code when it is loaded (__attribute__((constructor)), C++ static
 *    initialisers, -Wl,-init=) unless `attach --allow-constructors`: a constructor that
 *    aborts, exits or blocks (on a lock another, stopped, thread holds) kills or hangs
 *    the target. Do set-up lazily, on the replacement's first call, instead. If you
 *    must have a constructor: no locks, no I/O that can block, no exit, no threads.
 *
 * 5. Symbols. A replacement may call any function the target exports (libc, the
 *    program's exported functions): the target's dynamic loader binds them when it
 *    loads the library. Give replacements their own names (compute_fix, not compute).
 *    A variadic replacement cannot pass its `...` on through prev (C has no way to);
 *    wrap the function's va_list sibling (vprintf for printf) if it has one.
 *
 * Example (the fixture Fixtures/loop.c has `int compute(int x) { return x * scale; }`):
 *
 *     #include <swpatch.h>
 *
 *     // Declares `int (*compute_prev)(int x)` and defines `int compute_fix(int x)`.
 *     SWPATCH_REPLACE(int, compute, int x) {
 *       if (x < 0) return 0;          // the fix: refuse negative input
 *       return compute_prev(x);       // everything else: the version below
 *     }
 *
 * and its patch file:
 *
 *     { "id": "compute-fix", "library": "libcompute-fix.so",
 *       "functions": [{ "old": "compute", "new": "compute_fix", "prev": "compute_prev" }] }
 */
#ifndef SWPATCH_H
#define SWPATCH_H

/* Visible in .dynsym (even under -fvisibility=hidden) and kept by the compiler even
 * though nothing in the library refers to it: swpatch finds replacements and prev
 * cells by name. */
#define SWPATCH_EXPORT __attribute__((visibility("default"), used))

/* A replacement function's attributes. noipa: the compiler must not clone, inline or
 * specialise it (swpatch jumps to the symbol, with the old function's calling
 * convention). */
#define SWPATCH_REPLACEMENT SWPATCH_EXPORT __attribute__((noipa))

/* SWPATCH_PREV(int, compute, int) defines `int (*compute_prev)(int)`, an 8-byte
 * function-pointer variable swpatch fills (name it in the patch file's "prev"). It is
 * initialised, so it is a definition in .bss, never a common or undefined symbol.
 * The parameter list may carry names: SWPATCH_PREV(int, compute, int x). A return type
 * that is itself a function pointer needs a typedef first. */
#define SWPATCH_PREV(ret, fn, ...) SWPATCH_EXPORT ret (*fn##_prev)(__VA_ARGS__) = 0

/* SWPATCH_REPLACE(int, compute, int x) { ... } declares compute_prev as SWPATCH_PREV
 * does and starts the definition of the replacement `int compute_fix(int x)`. In the
 * patch file: "old": "compute", "new": "compute_fix", "prev": "compute_prev". */
#define SWPATCH_REPLACE(ret, fn, ...)           \
  SWPATCH_PREV(ret, fn, __VA_ARGS__);           \
  SWPATCH_REPLACEMENT ret fn##_fix(__VA_ARGS__); \
  SWPATCH_REPLACEMENT ret fn##_fix(__VA_ARGS__)

#endif /* SWPATCH_H */
