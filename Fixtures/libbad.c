// A library the target cannot load: RTLD_NOW fails on its undefined symbol, so dlopen
// reports an error through dlerror().
extern int swpatch_missing_symbol(void);
__attribute__((noipa)) int compute_bad(int x) { return swpatch_missing_symbol() + x; }
