// Replacement for asmfunc's seven (written in assembly): returns 8.
__attribute__((noipa)) int seven_v2(void) { return 8; }
