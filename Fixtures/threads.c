// A multi-threaded target: N workers (argv[2], default 4) call compute() in a loop,
// napping argv[3] ms (default 1) between calls; every interval (argv[1] ms) main prints
// one line per worker with its last result and call count, until SIGTERM.
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define PATCHABLE __attribute__((noipa))
#define MAX_WORKERS 256

static volatile sig_atomic_t stopping;
static void on_term(int sig) { (void)sig; stopping = 1; }

volatile int scale = 2;
PATCHABLE int compute(int x) { return x * scale; }

static volatile int last[MAX_WORKERS];
static volatile unsigned long calls[MAX_WORKERS];

static long nap_ms = 1;

static void *worker(void *arg) {
  long id = (long)arg;
  struct timespec nap = {nap_ms / 1000, (nap_ms % 1000) * 1000000L};
  while (!stopping) {
    last[id] = compute(21);
    calls[id]++;
    nanosleep(&nap, NULL);
  }
  return NULL;
}

int main(int argc, char **argv) {
  long interval = argc > 1 ? atol(argv[1]) : 200;
  long n = argc > 2 ? atol(argv[2]) : 4;
  if (n < 1 || n > MAX_WORKERS) n = 4;
  if (argc > 3) nap_ms = atol(argv[3]);
  struct timespec ts = {interval / 1000, (interval % 1000) * 1000000L};
  signal(SIGTERM, on_term);
  signal(SIGINT, on_term);
  setvbuf(stdout, NULL, _IOLBF, 0);
  pthread_t threads[MAX_WORKERS];
  for (long i = 0; i < n; i++) pthread_create(&threads[i], NULL, worker, (void *)i);
  printf("pid=%d workers=%ld\n", (int)getpid(), n);
  for (long tick = 0; !stopping; tick++) {
    for (long i = 0; i < n; i++)
      printf("tick=%ld worker=%ld compute=%d calls=%lu\n", tick, i, last[i], calls[i]);
    nanosleep(&ts, NULL);
  }
  for (long i = 0; i < n; i++) pthread_join(threads[i], NULL);
  printf("exiting\n");
  return 0;
}
