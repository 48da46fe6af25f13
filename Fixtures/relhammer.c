// Issue 13's prev hammer: eight worker threads call two functions whose first
// instructions, the ones an entry jump overwrites and `prev` runs relocated, hold a
// RIP-relative load (loadfirst: the global `offset`, then a call right after) and a
// relative call (callfirst: `call twice` among the copied bytes, then a RIP-relative
// add). Every result must be one a version may return: 49 from the original (2*21 + 7)
// or 1049 from a wrapper returning prev(x) + 1000. Every interval main prints the totals,
// split into original and wrapped results, so a test sees both were reached.
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define WORKERS 8

static volatile sig_atomic_t stopping;
static void on_term(int sig) { (void)sig; stopping = 1; }

volatile int offset = 7;
__attribute__((noipa)) int twice(int x) { return 2 * x; }
// -O1: push %rbx; mov offset(%rip),%ebx; call twice; ...
__attribute__((noipa)) int loadfirst(int x) {
  int o = offset;
  return twice(x) + o;
}
// -O1: sub $8,%rsp; call twice; add offset(%rip),%eax; ...
__attribute__((noipa)) int callfirst(int x) { return twice(x) + offset; }

static volatile unsigned long calls[WORKERS], original[WORKERS], wrapped[WORKERS], invalid[WORKERS];
static volatile int last_invalid; /* what an invalid result was, to tell how it went wrong */

static void count(long id, int v) {
  if (v == 49) original[id]++;
  else if (v == 1049) wrapped[id]++;
  else invalid[id]++, last_invalid = v;
  calls[id]++;
}

static void *worker(void *arg) {
  long id = (long)arg;
  while (!stopping) {
    count(id, loadfirst(21));
    count(id, callfirst(21));
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
    unsigned long c = 0, o = 0, w = 0, bad = 0;
    for (int i = 0; i < WORKERS; i++) c += calls[i], o += original[i], w += wrapped[i], bad += invalid[i];
    printf("tick=%ld loadfirst=%d callfirst=%d calls=%lu original=%lu wrapped=%lu invalid=%lu last_invalid=%d\n",
           tick, loadfirst(21), callfirst(21), c, o, w, bad, last_invalid);
    nanosleep(&ts, NULL);
  }
  for (int i = 0; i < WORKERS; i++) pthread_join(threads[i], NULL);
  return 0;
}
