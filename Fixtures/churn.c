// Threads that come and go: C creator threads (argv[2], default 4) each create a worker,
// join it and create the next, for ever. A worker calls compute() 20 times, 50 µs apart
// (so the machine is not saturated with clones), checks each
// result is a legitimate version (42 original, 63 libfix's compute_v2) and exits. Every
// interval (argv[1] ms) main prints the totals; a thread left stopped shows as `created`
// no longer growing, a bad switch as invalid>0.
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define PATCHABLE __attribute__((noipa))
#define MAX_CREATORS 16

static volatile sig_atomic_t stopping;
static void on_term(int sig) { (void)sig; stopping = 1; }

volatile int scale = 2;
PATCHABLE int compute(int x) { return x * scale; }

static volatile unsigned long created[MAX_CREATORS], invalid[MAX_CREATORS];
static volatile int last;

static void *worker(void *arg) {
  long id = (long)arg;
  struct timespec nap = {0, 50000L};
  for (int i = 0; i < 20; i++) {
    nanosleep(&nap, NULL);
    int v = compute(21);
    if (v != 42 && v != 63) invalid[id]++;
    last = v;
  }
  return NULL;
}

static void *creator(void *arg) {
  while (!stopping) {
    pthread_t t;
    if (pthread_create(&t, NULL, worker, arg) != 0) continue;
    pthread_join(t, NULL);
    created[(long)arg]++;
  }
  return NULL;
}

int main(int argc, char **argv) {
  long interval = argc > 1 ? atol(argv[1]) : 100;
  long n = argc > 2 ? atol(argv[2]) : 4;
  if (n < 1 || n > MAX_CREATORS) n = 4;
  struct timespec ts = {interval / 1000, (interval % 1000) * 1000000L};
  signal(SIGTERM, on_term);
  setvbuf(stdout, NULL, _IOLBF, 0);
  pthread_t creators[MAX_CREATORS];
  for (long i = 0; i < n; i++) pthread_create(&creators[i], NULL, creator, (void *)i);
  for (long tick = 0; !stopping; tick++) {
    unsigned long c = 0, bad = 0;
    for (long i = 0; i < n; i++) c += created[i], bad += invalid[i];
    printf("tick=%ld created=%lu invalid=%lu compute=%d\n", tick, c, bad, last);
    nanosleep(&ts, NULL);
  }
  for (long i = 0; i < n; i++) pthread_join(creators[i], NULL);
  return 0;
}
