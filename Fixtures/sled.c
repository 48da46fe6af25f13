// A target whose patched function has instruction boundaries known to the byte:
// sled = push %rbp (+0) ; mov %rsp,%rbp (+1) ; mov $100,%eax (+4) ; pop %rbp ; ret.
// A 5-byte entry jump covers +0..+4, so a thread stopped at +1 or +4 is inside it.
// stay = nop ; 1: pause ; jmp 1b ; ret: a thread that enters it spins at +1..+4 for ever,
// inside any entry jump; `sled MS spin` starts one such thread.
// Prints `sled=` every interval (argv[1] ms) until SIGTERM.
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

__asm__(".text\n"
        ".globl sled\n"
        ".type sled, @function\n"
        "sled:\n"
        "  push %rbp\n"
        "  mov %rsp, %rbp\n"
        "  mov $100, %eax\n"
        "  pop %rbp\n"
        "  ret\n"
        ".size sled, .-sled\n"
        ".globl stay\n"
        ".type stay, @function\n"
        "stay:\n"
        "  nop\n"
        "1:\n"
        "  pause\n"
        "  jmp 1b\n"
        "  ret\n"
        ".size stay, .-stay\n");
int sled(void);
void stay(void);
static void *spinner(void *arg) {
  (void)arg;
  stay();
  return NULL;
}

static volatile sig_atomic_t stopping;
static void on_term(int sig) { (void)sig; stopping = 1; }

int main(int argc, char **argv) {
  long interval = argc > 1 ? atol(argv[1]) : 20;
  struct timespec ts = {interval / 1000, (interval % 1000) * 1000000L};
  signal(SIGTERM, on_term);
  setvbuf(stdout, NULL, _IOLBF, 0);
  pthread_t spin;
  if (argc > 2 && !strcmp(argv[2], "spin")) pthread_create(&spin, NULL, spinner, NULL);
  printf("pid=%d\n", (int)getpid());
  for (long tick = 0; !stopping; tick++) {
    printf("tick=%ld sled=%d\n", tick, sled());
    nanosleep(&ts, NULL);
  }
  return 0;
}
