// Eight worker threads call foo() in a tight loop and check every result against the values
// a version of foo may legitimately return (100 original, 101..103 patches p1..p3).
// Every interval main prints the totals: a torn jump or a bad switch shows as invalid>0
// or as a crash.
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define PATCHABLE __attribute__((noipa))
#define WORKERS 8

static volatile sig_atomic_t stopping;
static void on_term(int sig) { (void)sig; stopping = 1; }

volatile int scale = 2;
PATCHABLE int foo(void) { return 100 + (scale - 2); }
PATCHABLE int bar(void) { return 200 + (scale - 2); }

static volatile unsigned long calls[WORKERS], invalid[WORKERS];

static void *worker(void *arg) {
  long id = (long)arg;
  while (!stopping) {
    int v = foo();
    if (v < 100 || v > 103) invalid[id]++;
    calls[id]++;
  }
  return NULL;
}

int main(int argc, char **argv) {
  long interval = argc > 1 ? atol(argv[1]) : 200;
  struct timespec ts = {interval / 1000, (interval % 1000) * 1000000L};
  signal(SIGTERM, on_term);
  setvbuf(stdout, NULL, _IOLBF, 0);
  pthread_t threads[WORKERS];
  for (long i = 0; i < WORKERS; i++) pthread_create(&threads[i], NULL, worker, (void *)i);
  for (long tick = 0; !stopping; tick++) {
    unsigned long c = 0, bad = 0;
    for (int i = 0; i < WORKERS; i++) c += calls[i], bad += invalid[i];
    printf("tick=%ld foo=%d calls=%lu invalid=%lu\n", tick, foo(), c, bad);
    nanosleep(&ts, NULL);
  }
  for (int i = 0; i < WORKERS; i++) pthread_join(threads[i], NULL);
  return 0;
}
