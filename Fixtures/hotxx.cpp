// C++ twin of hot.c for the per-thread transition: helper throws every 64th call and
// the worker catches it, so exceptions unwind through compute all the time. A
// redirected return address has no unwind information, so swpatch must not catch such
// threads on return: it waits for them (stack) or switches at once (entry).
// Prints every 100 ms: calls=C mixed=M throws=T   Usage: hotxx THREADS
#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <pthread.h>
#include <unistd.h>

extern "C" {
volatile int inside[64];
int helper(int x);
int compute(int t);
}

static thread_local long calls_here;
static std::atomic<long> calls, mixed, throws;

extern "C" __attribute__((noinline)) int helper(int x) {
  volatile int y = x;
  if ((++calls_here & 63) == 0) throw 7;
  return y + 1;
}

extern "C" __attribute__((noinline)) int compute(int t) {
  inside[t] = 1;
  volatile int s = 0;
  for (int i = 0; i < 60; i++) s += i;
  int r = helper(0) + 100;
  inside[t] = 0;
  return r;
}

static void *worker(void *arg) {
  int t = (int)(long)arg;
  for (;;) {
    try {
      int r = compute(t);
      if (r / 100 != r % 100) mixed++;
      calls++;
    } catch (int) {
      inside[t] = 0;
      throws++;
    }
  }
  return nullptr;
}

static void on_term(int) { _exit(0); }

int main(int argc, char **argv) {
  int n = argc > 1 ? atoi(argv[1]) : 2;
  if (n < 1 || n > 64) n = 2;
  signal(SIGTERM, on_term);
  setvbuf(stdout, nullptr, _IOLBF, 0);
  pthread_t threads[64];
  for (int t = 0; t < n; t++) pthread_create(&threads[t], nullptr, worker, (void *)(long)t);
  for (;;) {
    usleep(100000);
    printf("calls=%ld mixed=%ld throws=%ld\n", calls.load(), mixed.load(), throws.load());
  }
}
