// A target with a thread that holds a lock most of the time: `holder` locks
// holder_mutex, sleeps 100 ms, unlocks, sleeps 1 ms, for ever. libneedslock.so's
// constructor takes that lock, so a dlopen of it while the holder is stopped holding it
// never returns. Main prints compute= every interval (argv[1] ms) until SIGTERM.
// Linked with -rdynamic so that the library finds holder_mutex with dlsym.
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define PATCHABLE __attribute__((noipa))
volatile int scale = 2;
PATCHABLE int compute(int x) { return x * scale; }

pthread_mutex_t holder_mutex = PTHREAD_MUTEX_INITIALIZER;
static volatile sig_atomic_t stopping;
static void on_term(int sig) { (void)sig; stopping = 1; }

static void *holder(void *arg) {
  (void)arg;
  struct timespec hold = {0, 100000000L}, gap = {0, 1000000L};
  while (!stopping) {
    pthread_mutex_lock(&holder_mutex);
    nanosleep(&hold, NULL);
    pthread_mutex_unlock(&holder_mutex);
    nanosleep(&gap, NULL);
  }
  return NULL;
}

int main(int argc, char **argv) {
  long interval = argc > 1 ? atol(argv[1]) : 20;
  struct timespec ts = {interval / 1000, (interval % 1000) * 1000000L};
  signal(SIGTERM, on_term);
  setvbuf(stdout, NULL, _IOLBF, 0);
  pthread_t t;
  pthread_create(&t, NULL, holder, NULL);
  for (long tick = 0; !stopping; tick++) {
    printf("tick=%ld compute=%d\n", tick, compute(21));
    nanosleep(&ts, NULL);
  }
  pthread_join(t, NULL);
  return 0;
}
