// Patch p1 of the stacking scenario: foo returns 101, bar returns 201.
__attribute__((noipa)) int foo_p1(void) { return 101; }
__attribute__((noipa)) int bar_p1(void) { return 201; }
