// Replaces libinternal.so's lib_value with code that calls its hidden lib_scale and
// writes its static lib_count: lib=7003 libcount=10, 20, ...
extern int lib_scale(int);
extern volatile int lib_count;

int lib_value_ext(int x) {
  lib_count += 10;
  return lib_scale(x) + 7000;
}
