// Hot functions for the per-thread transition: N worker threads spend nearly all their
// time inside compute(), which calls helper(). libhot.so replaces both. Every call
// checks that compute and helper answered from one version (old 100+1, new 200+2): a
// mix means a thread ran old and new code in one call chain. Each thread also counts
// how often its version changed. The main thread samples, every 20 us, which workers
// are inside compute, and prints a line every 100 ms:
//   calls=C mixed=M flips=F v1=A v2=B inside=P jumps=J cancels=K
// Usage: hot THREADS [plain|longjmp|cancel]
//   longjmp: every 64th call leaves helper by longjmp back to the worker loop.
//   cancel:  the main thread cancels a worker every 200 ms (inside compute, at a
//            cancellation point in helper) and starts another in its place.
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAXT 64
enum mode { PLAIN, LONGJMP, CANCEL };
static enum mode mode = PLAIN;

// Read by the replacement too (-rdynamic).
volatile int inside[MAXT];
__thread jmp_buf *escape;
__thread long calls_here;

struct counters {
  long calls, mixed, flips, v1, v2, jumps;
  int last;
  char pad[64];
};
static struct counters counts[MAXT];
static atomic_long cancels;

__attribute__((noinline)) int helper(int x) {
  volatile int y = x;
  if (mode == LONGJMP && escape && (++calls_here & 63) == 0) longjmp(*escape, 1);
  if (mode == CANCEL) pthread_testcancel();
  return y + 1;
}

__attribute__((noinline)) int compute(int t) {
  inside[t] = 1;
  volatile int s = 0;
  for (int i = 0; i < 60; i++) s += i;
  int r = helper(0) + 100;
  inside[t] = 0;
  return r;
}

static void *worker(void *arg) {
  int t = (int)(long)arg;
  struct counters *c = &counts[t];
  jmp_buf here;
  for (;;) {
    if (mode == LONGJMP) {
      if (setjmp(here)) {
        inside[t] = 0;
        c->jumps++;
        continue;
      }
      escape = &here;
    }
    int r = compute(t);
    int v = r == 101 ? 1 : r == 202 ? 2 : 0;
    c->calls++;
    if (v == 0) {
      c->mixed++;
      continue;
    }
    if (v == 1) c->v1++; else c->v2++;
    if (c->last && c->last != v) c->flips++;
    c->last = v;
  }
  return NULL;
}

static void on_term(int sig) {
  (void)sig;
  _exit(0);
}

int main(int argc, char **argv) {
  int n = argc > 1 ? atoi(argv[1]) : 2;
  if (n < 1 || n > MAXT) n = 2;
  if (argc > 2 && strcmp(argv[2], "longjmp") == 0) mode = LONGJMP;
  if (argc > 2 && strcmp(argv[2], "cancel") == 0) mode = CANCEL;
  signal(SIGTERM, on_term);
  setvbuf(stdout, NULL, _IOLBF, 0);
  pthread_t threads[MAXT];
  for (int t = 0; t < n; t++) pthread_create(&threads[t], NULL, worker, (void *)(long)t);
  long samples = 0, in = 0;
  struct timespec start, now, pause = {0, 20000};
  clock_gettime(CLOCK_MONOTONIC, &start);
  struct timespec lastCancel = start;
  for (;;) {
    nanosleep(&pause, NULL);
    for (int t = 0; t < n; t++) in += inside[t];
    samples += n;
    clock_gettime(CLOCK_MONOTONIC, &now);
    long ms = (now.tv_sec - lastCancel.tv_sec) * 1000 + (now.tv_nsec - lastCancel.tv_nsec) / 1000000;
    if (mode == CANCEL && ms >= 200) {
      lastCancel = now;
      int t = (int)(cancels % n);
      pthread_cancel(threads[t]);
      pthread_join(threads[t], NULL);
      inside[t] = 0;
      atomic_fetch_add(&cancels, 1);
      pthread_create(&threads[t], NULL, worker, (void *)(long)t);
    }
    ms = (now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000;
    if (ms >= 100) {
      long calls = 0, mixed = 0, flips = 0, v1 = 0, v2 = 0, jumps = 0;
      for (int t = 0; t < n; t++) {
        calls += counts[t].calls;
        mixed += counts[t].mixed;
        v1 += counts[t].v1;
        v2 += counts[t].v2;
        jumps += counts[t].jumps;
        if (counts[t].flips > flips) flips = counts[t].flips;
      }
      printf("calls=%ld mixed=%ld flips=%ld v1=%ld v2=%ld inside=%ld jumps=%ld cancels=%ld\n", calls, mixed,
             flips, v1, v2, samples ? in * 100 / samples : 0, jumps, (long)atomic_load(&cancels));
      samples = in = 0;
      start = now;
    }
  }
}
