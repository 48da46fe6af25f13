// Replacements for sled.c's sled and stay.
__attribute__((noipa)) int sled_v2(void) { return 200; }
__attribute__((noipa)) void stay_v2(void) {}
