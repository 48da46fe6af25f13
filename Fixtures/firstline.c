// For `swpatch run`: the very first line of output comes from compute, then the
// program echoes each line of its standard input, and exits with status 7.
#include <stdio.h>
#include <string.h>

#define PATCHABLE __attribute__((noipa))

volatile int scale = 2;
PATCHABLE int compute(int x) { return x * scale; }

int main(void) {
  printf("compute=%d\n", compute(21));
  char line[256];
  while (fgets(line, sizeof line, stdin)) printf("echo=%s", line);
  return 7;
}
