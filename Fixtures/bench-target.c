// The benchmark's target (make bench): THREADS threads, and a control block shared with
// the bench through a file, so the bench reads the target's own view of a patch without
// pipes.
//
//   bench-target CONTROL_FILE THREADS PATCH_LIBRARY [PRELOAD...]
//
// One thread is "busy": in mode 1 it spins calling bench_f0 and records the longest gap
// between two iterations (how long a patcher held it); in mode 2 it measures calls per
// second of a tight loop through bench_f0 against the same loop calling bench_f0_v2 of
// PATCH_LIBRARY directly, in alternating 40 ms windows. In mode 0 it naps. With
// THREADS = 1 the busy thread is main; otherwise main naps (it is the thread a patcher
// borrows to call dlopen), one thread is busy and the rest nap 10 ms between calls.
// PRELOAD libraries are dlopened at start (libLLVM-15 for symbol look-ups). Exits
// cleanly on SIGTERM.
#include <dlfcn.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

// bench_f0 .. bench_f999 live in the generated bench-functions.c (gen-bench.sh).
int bench_f0(int x);

#define WINDOWS 64

// Layout shared with Sources/swpatch-bench/TargetControl.swift: 64-bit words.
struct control {
  volatile uint64_t ready;       // the target's pid once every thread runs
  volatile uint64_t mode;        // bench: 0 nap, 1 gap probe, 2 call rate
  volatile uint64_t epoch;       // bench: bump to start a new gap measurement
  volatile uint64_t seenEpoch;   // target: the epoch max_gap_ns belongs to
  volatile uint64_t maxGapNs;    // target: longest gap between busy iterations
  volatile uint64_t iterations;  // target: busy iterations so far
  volatile uint64_t windows;     // target: rate windows written so far
  volatile uint64_t error;       // target: 1 if PATCH_LIBRARY could not be loaded
  volatile double patchedRate[WINDOWS];  // calls/s through bench_f0, window i % WINDOWS
  volatile double directRate[WINDOWS];   // calls/s of bench_f0_v2 called directly
};

static volatile sig_atomic_t stopping;
static void on_term(int sig) { (void)sig; stopping = 1; }

static struct control *ctl;
static const char *patchLibrary;
static volatile long sink;

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void nap_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

// Spins until the mode changes, keeping the longest gap between two iterations.
static void probe(void) {
  uint64_t epoch = ctl->epoch, longest = 0, prev = now_ns();
  ctl->maxGapNs = 0;
  ctl->seenEpoch = epoch;
  for (long i = 0; ctl->mode == 1 && !stopping; i++) {
    sink += bench_f0((int)i);
    uint64_t t = now_ns();
    if (ctl->epoch != epoch) {
      epoch = ctl->epoch;
      longest = 0;
      ctl->maxGapNs = 0;
      ctl->seenEpoch = epoch;
    } else if (t - prev > longest) {
      longest = t - prev;
      ctl->maxGapNs = longest;
    }
    prev = t;
    ctl->iterations++;
  }
}

#define WINDOW_NS 40000000u
#define CHUNK 4096

// The call site a patcher redirects: a direct call to bench_f0.
__attribute__((noinline)) static double rate_through_site(void) {
  uint64_t start = now_ns(), elapsed;
  long calls = 0, acc = 0;
  do {
    for (int i = 0; i < CHUNK; i++) acc += bench_f0(i);
    calls += CHUNK;
  } while ((elapsed = now_ns() - start) < WINDOW_NS);
  sink += acc;
  return (double)calls * 1e9 / (double)elapsed;
}

// The physical limit: the same loop calling the replacement itself.
__attribute__((noinline)) static double rate_direct(int (*replacement)(int)) {
  uint64_t start = now_ns(), elapsed;
  long calls = 0, acc = 0;
  do {
    for (int i = 0; i < CHUNK; i++) acc += replacement(i);
    calls += CHUNK;
  } while ((elapsed = now_ns() - start) < WINDOW_NS);
  sink += acc;
  return (double)calls * 1e9 / (double)elapsed;
}

static void measure_rates(void) {
  // Loaded here, not at start, so that a patcher's attach still loads it itself;
  // when a patcher has loaded it already this only takes a reference.
  void *handle = dlopen(patchLibrary, RTLD_NOW);
  int (*replacement)(int) = handle ? (int (*)(int))dlsym(handle, "bench_f0_v2") : NULL;
  if (!replacement) {
    ctl->error = 1;
    while (ctl->mode == 2 && !stopping) nap_ms(1);
    return;
  }
  while (ctl->mode == 2 && !stopping) {
    double patched = rate_through_site();
    double direct = rate_direct(replacement);
    uint64_t w = ctl->windows;
    ctl->patchedRate[w % WINDOWS] = patched;
    ctl->directRate[w % WINDOWS] = direct;
    __atomic_store_n(&ctl->windows, w + 1, __ATOMIC_RELEASE);
  }
}

static void busy_loop(void) {
  while (!stopping) {
    switch (ctl->mode) {
      case 1: probe(); break;
      case 2: measure_rates(); break;
      default:
        sink += bench_f0(1);
        nap_ms(1);
    }
  }
}

static void *busy_thread(void *arg) {
  (void)arg;
  busy_loop();
  return NULL;
}

static void *napping_thread(void *arg) {
  (void)arg;
  while (!stopping) {
    sink += bench_f0(2);
    nap_ms(10);
  }
  return NULL;
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: bench-target CONTROL_FILE THREADS PATCH_LIBRARY [PRELOAD...]\n");
    return 64;
  }
  long threads = atol(argv[2]);
  if (threads < 1 || threads > 4096) {
    fprintf(stderr, "bench-target: THREADS must be 1..4096\n");
    return 64;
  }
  patchLibrary = argv[3];
  int fd = open(argv[1], O_RDWR);
  if (fd < 0 || ftruncate(fd, sizeof(struct control)) != 0) {
    perror("bench-target: control file");
    return 1;
  }
  ctl = mmap(NULL, sizeof(struct control), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (ctl == MAP_FAILED) {
    perror("bench-target: mmap");
    return 1;
  }
  for (int i = 4; i < argc; i++)
    if (!dlopen(argv[i], RTLD_NOW | RTLD_GLOBAL)) {
      fprintf(stderr, "bench-target: %s\n", dlerror());
      return 1;
    }
  signal(SIGTERM, on_term);
  signal(SIGINT, on_term);
  pthread_t *ids = calloc((size_t)threads, sizeof(pthread_t));
  for (long i = 1; i < threads; i++)
    if (pthread_create(&ids[i], NULL, i == 1 ? busy_thread : napping_thread, NULL) != 0) {
      fprintf(stderr, "bench-target: cannot start thread %ld\n", i);
      return 1;
    }
  ctl->ready = (uint64_t)getpid();
  if (threads == 1)
    busy_loop();
  else
    while (!stopping) nap_ms(100);
  for (long i = 1; i < threads; i++) pthread_join(ids[i], NULL);
  return 0;
}
