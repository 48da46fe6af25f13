// Counts SIGUSR1 deliveries: prints `usr1=N` each time the count changes (polled every
// millisecond), and compute= like the other targets, until SIGTERM.
#include <signal.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#define PATCHABLE __attribute__((noipa))
volatile int scale = 2;
PATCHABLE int compute(int x) { return x * scale; }

static volatile sig_atomic_t stopping, count;
static void on_term(int sig) { (void)sig; stopping = 1; }
static void on_usr1(int sig) { (void)sig; count++; }

int main(void) {
  struct sigaction sa = {.sa_handler = on_usr1, .sa_flags = SA_RESTART};
  sigemptyset(&sa.sa_mask);
  sigaction(SIGUSR1, &sa, NULL);
  signal(SIGTERM, on_term);
  setvbuf(stdout, NULL, _IOLBF, 0);
  printf("ready usr1=0 compute=%d\n", compute(21));
  int seen = 0;
  struct timespec ms = {0, 1000000L};
  while (!stopping) {
    int now = count;
    if (now != seen) {
      seen = now;
      printf("usr1=%d compute=%d\n", now, compute(21));
    }
    nanosleep(&ms, NULL);
  }
  return 0;
}
