// A thread blocked in vfork: one thread vforks a child that sleeps argv[1] seconds
// (default 8) and _exits, then prints `vfork=done`; meanwhile a worker calls compute()
// and prints its value every 50 ms, until SIGTERM.
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PATCHABLE __attribute__((noipa))

static volatile sig_atomic_t stopping;
static void on_term(int sig) { (void)sig; stopping = 1; }

volatile int scale = 2;
PATCHABLE int compute(int x) { return x * scale; }

static unsigned child_seconds = 8;

static void *vforker(void *arg) {
  (void)arg;
  pid_t child = vfork();
  if (child == 0) {
    sleep(child_seconds);
    _exit(0);
  }
  waitpid(child, NULL, 0);
  printf("vfork=done child=%d\n", (int)child);
  return NULL;
}

int main(int argc, char **argv) {
  if (argc > 1) child_seconds = (unsigned)atoi(argv[1]);
  signal(SIGTERM, on_term);
  signal(SIGINT, on_term);
  setvbuf(stdout, NULL, _IOLBF, 0);
  printf("pid=%d\n", (int)getpid());
  pthread_t thread;
  pthread_create(&thread, NULL, vforker, NULL);
  struct timespec ts = {0, 50 * 1000000L};
  for (long tick = 0; !stopping; tick++) {
    printf("tick=%ld compute=%d\n", tick, compute(21));
    nanosleep(&ts, NULL);
  }
  printf("exiting\n");
  return 0;
}
