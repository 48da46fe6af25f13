// Hot functions for the per-thread transition: N worker threads spend nearly all their
// time inside compute(), which calls helper(). libhot.so (and libhot3.so) replace both.
// Every call checks that compute and helper answered from one version (version N gives
// N*100 + N: the original 101, libhot 202, libhot3 303): a mix means a thread ran old
// and new code in one call chain. Each thread also counts
// how often its version changed, and, with HOT_GAPS=1 in the environment (reading the
// clock every 16th call costs compute about a tenth of its share, so only the bench
// asks), the longest gap between two of its calls: a stop, or a preemption.
// The main thread samples, every 20 us, which workers are inside compute, and prints a
// line every 100 ms:
//   calls=C mixed=M flips=F v1=A v2=B inside=P jumps=J cancels=K progress=R maxgap_us=G
// progress: the fewest calls any worker made since the previous line (0: one is stuck);
// maxgap_us: the longest gap of any worker since the previous line.
// Usage: hot THREADS [plain|longjmp|park|slow]
//   longjmp: every 64th call leaves helper by longjmp back to the worker loop.
//   park:    on SIGUSR1 worker 0 parks inside helper (in pause(), a cancellation
//            point) and prints "parked tid=T"; on SIGUSR2 the main thread cancels it,
//            joins it and prints "cancelled tid=T".
//   slow:    helper spins for 20 ms: a transition waits that long for each thread, so
//            that a kill of swpatch at a random instant often lands inside one.
#define _GNU_SOURCE
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
enum mode { PLAIN, LONGJMP, PARK, SLOW };
static enum mode mode = PLAIN;
static int gaps;

// Read by the replacement too (-rdynamic).
volatile int inside[MAXT];
volatile long spin_ns;  // slow mode: how long every helper (old or new) spins
void spin(void) {
  struct timespec a, b;
  clock_gettime(CLOCK_MONOTONIC, &a);
  do clock_gettime(CLOCK_MONOTONIC, &b);
  while ((b.tv_sec - a.tv_sec) * 1000000000L + (b.tv_nsec - a.tv_nsec) < spin_ns);
}
__thread jmp_buf *escape;
__thread long calls_here;

struct counters {
  long calls, mixed, flips, v1, v2, jumps;
  long reported;              // calls at the previous line (main thread only)
  atomic_long maxgap_ns;      // reset by the main thread at each line
  int last;
  char pad[64];
};
static struct counters counts[MAXT];
static atomic_long cancels;
static volatile sig_atomic_t park_requested, cancel_requested;
static __thread int my_index;
static void on_usr1(int sig) { (void)sig; park_requested = 1; }
static void on_usr2(int sig) { (void)sig; cancel_requested = 1; }

__attribute__((noinline)) int helper(int x) {
  volatile int y = x;
  if (mode == LONGJMP && escape && (++calls_here & 63) == 0) longjmp(*escape, 1);
  if (mode == PARK && park_requested && my_index == 0) {
    park_requested = 0;
    printf("parked tid=%d\n", gettid());
    for (;;) pause();
  }
  if (spin_ns) spin();
  return y + 1;
}

__attribute__((noinline)) int compute(int t) {
  inside[t] = 1;
  volatile int s = 0;
  for (int i = 0; i < 150; i++) s += i;
  int r = helper(0) + 100;
  inside[t] = 0;
  return r;
}

static void *worker(void *arg) {
  int t = (int)(long)arg;
  my_index = t;
  struct counters *c = &counts[t];
  jmp_buf here;
  struct timespec then, now;
  clock_gettime(CLOCK_MONOTONIC, &then);
  for (;;) {
    if (gaps && (c->calls & 15) == 0) {
      clock_gettime(CLOCK_MONOTONIC, &now);
      long gap = (now.tv_sec - then.tv_sec) * 1000000000L + (now.tv_nsec - then.tv_nsec);
      if (gap > atomic_load_explicit(&c->maxgap_ns, memory_order_relaxed))
        atomic_store_explicit(&c->maxgap_ns, gap, memory_order_relaxed);
      then = now;
    }
    if (mode == LONGJMP) {
      if (setjmp(here)) {
        inside[t] = 0;
        c->jumps++;
        continue;
      }
      escape = &here;
    }
    int r = compute(t);
    int v = r / 100 == r % 100 ? r / 100 : 0;
    c->calls++;
    if (v == 0) {
      c->mixed++;
      continue;
    }
    if (v == 1) c->v1++; else c->v2++;  // v2: any replacement
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
  if (argc > 2 && strcmp(argv[2], "park") == 0) mode = PARK;
  if (argc > 2 && strcmp(argv[2], "slow") == 0) mode = SLOW, spin_ns = 20000000L;
  gaps = getenv("HOT_GAPS") && strcmp(getenv("HOT_GAPS"), "1") == 0;
  signal(SIGTERM, on_term);
  signal(SIGUSR1, on_usr1);
  signal(SIGUSR2, on_usr2);
  setvbuf(stdout, NULL, _IOLBF, 0);
  pthread_t threads[MAXT];
  for (int t = 0; t < n; t++) pthread_create(&threads[t], NULL, worker, (void *)(long)t);
  long samples = 0, in = 0;
  struct timespec start, now, pause = {0, 20000};
  clock_gettime(CLOCK_MONOTONIC, &start);
  for (;;) {
    nanosleep(&pause, NULL);
    for (int t = 0; t < n; t++) in += inside[t];
    samples += n;
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (cancel_requested) {
      cancel_requested = 0;
      pthread_cancel(threads[0]);
      pthread_join(threads[0], NULL);
      inside[0] = 0;
      atomic_fetch_add(&cancels, 1);
      printf("cancelled worker=0\n");
    }
    long ms = (now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000;
    if (ms >= 100) {
      long calls = 0, mixed = 0, flips = 0, v1 = 0, v2 = 0, jumps = 0, progress = -1, gap = 0;
      for (int t = 0; t < n; t++) {
        long made = counts[t].calls - counts[t].reported;
        counts[t].reported += made;
        if (progress < 0 || made < progress) progress = made;
        long g = atomic_exchange(&counts[t].maxgap_ns, 0);
        if (g > gap) gap = g;
        calls += counts[t].calls;
        mixed += counts[t].mixed;
        v1 += counts[t].v1;
        v2 += counts[t].v2;
        jumps += counts[t].jumps;
        if (counts[t].flips > flips) flips = counts[t].flips;
      }
      printf("calls=%ld mixed=%ld flips=%ld v1=%ld v2=%ld inside=%ld jumps=%ld cancels=%ld progress=%ld "
             "maxgap_us=%ld\n",
             calls, mixed, flips, v1, v2, samples ? in * 100 / samples : 0, jumps, (long)atomic_load(&cancels),
             progress, gap / 1000);
      samples = in = 0;
      start = now;
    }
  }
}
