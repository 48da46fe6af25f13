// Two functions written in assembly. `looper` loops back to entry+2, inside the five
// bytes an entry jump would overwrite: it must be refused. `countdown` loops back to
// its entry itself, which lands on the jump: it may be patched.
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

__asm__(
    ".text\n"
    ".globl looper\n"
    ".type looper, @function\n"
    "looper:\n"            // int looper(int n): n + (n-1) + ... + 1
    "  xorl %eax, %eax\n"  // 2 bytes
    "1:\n"                 // entry+2
    "  addl %edi, %eax\n"
    "  decl %edi\n"
    "  jg 1b\n"
    "  ret\n"
    ".size looper, .-looper\n"
    ".globl countdown\n"
    ".type countdown, @function\n"
    "countdown:\n"  // int countdown(int n): 7 once n reaches 0
    "  testl %edi, %edi\n"
    "  jle 2f\n"
    "  decl %edi\n"
    "  jmp countdown\n"
    "2:\n"
    "  movl $7, %eax\n"
    "  ret\n"
    ".size countdown, .-countdown\n");

int looper(int n);
int countdown(int n);
int (*volatile looper_ptr)(int) = looper;
int (*volatile countdown_ptr)(int) = countdown;

static volatile sig_atomic_t stopping;
static void on_term(int sig) { (void)sig; stopping = 1; }

int main(int argc, char **argv) {
  long interval = argc > 1 ? atol(argv[1]) : 200;
  struct timespec ts = {interval / 1000, (interval % 1000) * 1000000L};
  signal(SIGTERM, on_term);
  signal(SIGINT, on_term);
  setvbuf(stdout, NULL, _IOLBF, 0);
  printf("pid=%d\n", (int)getpid());
  for (long tick = 0; !stopping; tick++) {
    printf("tick=%ld looper=%d countdown=%d\n", tick, looper_ptr(3), countdown_ptr(3));
    nanosleep(&ts, NULL);
  }
  printf("exiting\n");
  return 0;
}
