// Replacement for parked.c's answer(): version 2, which parks the same way, so a
// thread can be held inside the replacement too.
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>

__attribute__((noipa)) int answer_v2(int fd) {
  if (fd >= 0) {
    char c;
    printf("parked version=2 tid=%ld\n", (long)syscall(SYS_gettid));
    if (read(fd, &c, 1) != 1) return -1;
  }
  return 2;
}
