// Another tracer: seizes the pid in argv[1] and holds it until SIGTERM, so tests can
// check that swpatch refuses a target that is already traced.
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ptrace.h>
#include <unistd.h>

static volatile sig_atomic_t stopping;
static void on_term(int sig) { (void)sig; stopping = 1; }

int main(int argc, char **argv) {
  if (argc < 2) return 2;
  pid_t pid = (pid_t)atoi(argv[1]);
  signal(SIGTERM, on_term);
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (ptrace(PTRACE_SEIZE, pid, NULL, NULL) != 0) {
    perror("PTRACE_SEIZE");
    return 1;
  }
  printf("traced=%d\n", (int)pid);
  while (!stopping) pause();
  ptrace(PTRACE_DETACH, pid, NULL, NULL);
  return 0;
}
