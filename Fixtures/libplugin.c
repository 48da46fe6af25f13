// A plugin the `places` fixture dlopens a few ticks after start.
__attribute__((noipa)) int plugin_value(int x) { return x + 2000; }
