// A library the target cannot load although swpatch passes it: plugin_value is exported
// by libplugin.so, which the places fixture dlopens RTLD_LOCAL, so swpatch leaves the
// reference to the loader, whose global scope does not hold it. RTLD_NOW then fails on
// it, and dlopen reports an error through dlerror().
extern int plugin_value(int);
__attribute__((noipa)) int shared_bad(int x) { return plugin_value(x) + x; }
