// Patch p2 of the stacking scenario: foo returns 102, bar returns 202.
__attribute__((noipa)) int foo_p2(void) { return 102; }
__attribute__((noipa)) int bar_p2(void) { return 202; }
