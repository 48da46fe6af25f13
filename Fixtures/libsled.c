// Replacements for sled.c's sled, stay and unmovable.
__attribute__((noipa)) int sled_v2(void) { return 200; }
__attribute__((noipa)) void stay_v2(void) {}
__attribute__((noipa)) void unmovable_v2(void) {}
