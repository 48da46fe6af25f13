// The library of the `named` fixture: built as libnamed.so.1.2.3 with the SONAME
// libnamed.so.1, so that `object` can be tested by file name, soname and path.
// `base` is volatile so that the function is long enough for the entry jump.
static volatile int base = 10;
__attribute__((noipa)) int named_value(int x) { return x + base; }
