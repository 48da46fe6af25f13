// Parks the main thread of pid argv[1] at address argv[2] (hex), an instruction boundary
// of code it runs: a breakpoint of our own, the byte restored, rip set back onto the
// address, then a detach that delivers SIGSTOP, so the process is left job-control
// stopped with its thread about to execute that instruction. Prints `parked=ADDR`.
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ptrace.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <unistd.h>

static int fail(const char *what) {
  perror(what);
  return 1;
}

int main(int argc, char **argv) {
  if (argc < 3) return 2;
  pid_t pid = (pid_t)atoi(argv[1]);
  uintptr_t addr = (uintptr_t)strtoull(argv[2], NULL, 16);
  int status;
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (ptrace(PTRACE_SEIZE, pid, 0, 0) != 0) return fail("PTRACE_SEIZE");
  if (ptrace(PTRACE_INTERRUPT, pid, 0, 0) != 0) return fail("PTRACE_INTERRUPT");
  if (waitpid(pid, &status, __WALL) != pid) return fail("waitpid");
  errno = 0;
  long word = ptrace(PTRACE_PEEKTEXT, pid, (void *)addr, 0);
  if (errno != 0) return fail("PTRACE_PEEKTEXT");
  if (ptrace(PTRACE_POKETEXT, pid, (void *)addr, (void *)((word & ~0xffL) | 0xcc)) != 0)
    return fail("PTRACE_POKETEXT");
  int signal_to_pass = 0;
  struct user_regs_struct regs;
  for (;;) {
    if (ptrace(PTRACE_CONT, pid, 0, (void *)(long)signal_to_pass) != 0) return fail("PTRACE_CONT");
    if (waitpid(pid, &status, __WALL) != pid || !WIFSTOPPED(status)) return fail("waitpid");
    signal_to_pass = 0;
    if (status >> 16) continue; /* an event stop */
    if (WSTOPSIG(status) != SIGTRAP) {
      signal_to_pass = WSTOPSIG(status);
      continue;
    }
    if (ptrace(PTRACE_GETREGS, pid, 0, &regs) != 0) return fail("PTRACE_GETREGS");
    if (regs.rip == addr + 1) break;
  }
  if (ptrace(PTRACE_POKETEXT, pid, (void *)addr, (void *)word) != 0) return fail("restore");
  regs.rip = addr;
  if (ptrace(PTRACE_SETREGS, pid, 0, &regs) != 0) return fail("PTRACE_SETREGS");
  if (ptrace(PTRACE_DETACH, pid, 0, (void *)(long)SIGSTOP) != 0) return fail("PTRACE_DETACH");
  printf("parked=%lx\n", (unsigned long)addr);
  return 0;
}
