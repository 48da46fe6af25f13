// Patch p3 of the stacking scenario: foo returns 103, bar returns 203.
__attribute__((noipa)) int foo_p3(void) { return 103; }
__attribute__((noipa)) int bar_p3(void) { return 203; }
