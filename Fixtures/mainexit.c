// A process whose main thread has exited: main starts one worker, prints its pid and
// calls pthread_exit (with argv[2] = "wait", only once it gets SIGUSR1), printing
// `main=exiting` first. The worker calls compute() and prints its value every interval
// (ms, argv[1], default 100) until SIGTERM; the process ends when it returns.
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define PATCHABLE __attribute__((noipa))

static volatile sig_atomic_t stopping;
static void on_term(int sig) { (void)sig; stopping = 1; }

volatile int scale = 2;
PATCHABLE int compute(int x) { return x * scale; }

static long interval = 100;

static void *worker(void *arg) {
  (void)arg;
  struct timespec ts = {interval / 1000, (interval % 1000) * 1000000L};
  for (long tick = 0; !stopping; tick++) {
    printf("tick=%ld compute=%d\n", tick, compute(21));
    nanosleep(&ts, NULL);
  }
  printf("exiting\n");
  return NULL;
}

int main(int argc, char **argv) {
  if (argc > 1) interval = atol(argv[1]);
  int wait = argc > 2 && strcmp(argv[2], "wait") == 0;
  signal(SIGTERM, on_term);
  signal(SIGINT, on_term);
  setvbuf(stdout, NULL, _IOLBF, 0);
  // Blocked before the worker starts, so that only main's sigwait takes SIGUSR1.
  sigset_t usr1;
  sigemptyset(&usr1);
  sigaddset(&usr1, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &usr1, NULL);
  pthread_t thread;
  pthread_create(&thread, NULL, worker, NULL);
  printf("pid=%d\n", (int)getpid());
  int got;
  if (wait) sigwait(&usr1, &got);
  printf("main=exiting\n");
  pthread_exit(NULL);
}
