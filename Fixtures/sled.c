// A target whose patched function has instruction boundaries known to the byte:
// sled = push %rbp (+0) ; mov %rsp,%rbp (+1) ; mov $100,%eax (+4) ; pop %rbp ; ret.
// A 5-byte entry jump covers +0..+4, so a thread stopped at +1 or +4 is inside it.
// stay = syscall ; mov $34,%eax ; jmp stay, entered with eax = 34 (pause): a thread in it
// blocks in pause() at +2 for ever, and a resume restarts the `syscall` at +0, inside any
// entry jump; `sled MS stay` starts one such thread (it sleeps, it does not spin).
// unmovable = syscall ; loop unmovable ; ...: like stay, but `loop` has no long form, so
// its first bytes cannot be relocated and a thread in it cannot be moved into a copy;
// `sled MS unmovable` starts one such thread.
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
        "  syscall\n"
        "  mov $34, %eax\n"
        "  jmp stay\n"
        ".size stay, .-stay\n"
        "enter_stay:\n"
        "  mov $34, %eax\n"
        "  jmp stay\n"
        ".globl unmovable\n"
        ".type unmovable, @function\n"
        "unmovable:\n"
        "  syscall\n"
        "  loop unmovable\n"
        "  mov $34, %eax\n"
        "  jmp unmovable\n"
        ".size unmovable, .-unmovable\n"
        "enter_unmovable:\n"
        "  mov $34, %eax\n"
        "  jmp unmovable\n");
int sled(void);
void enter_stay(void);
void enter_unmovable(void);
static void *stayer(void *arg) {
  (void)arg;
  enter_stay();
  return NULL;
}

static void *unmover(void *arg) {
  (void)arg;
  enter_unmovable();
  return NULL;
}

static volatile sig_atomic_t stopping;
static void on_term(int sig) { (void)sig; stopping = 1; }

int main(int argc, char **argv) {
  long interval = argc > 1 ? atol(argv[1]) : 20;
  struct timespec ts = {interval / 1000, (interval % 1000) * 1000000L};
  signal(SIGTERM, on_term);
  setvbuf(stdout, NULL, _IOLBF, 0);
  pthread_t stays;
  if (argc > 2 && !strcmp(argv[2], "stay")) pthread_create(&stays, NULL, stayer, NULL);
  if (argc > 2 && !strcmp(argv[2], "unmovable")) pthread_create(&stays, NULL, unmover, NULL);
  printf("pid=%d\n", (int)getpid());
  for (long tick = 0; !stopping; tick++) {
    printf("tick=%ld sled=%d\n", tick, sled());
    nanosleep(&ts, NULL);
  }
  return 0;
}
