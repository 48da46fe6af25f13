// A process under a seccomp filter: with argv[1] = "mdwe" (the default), the one
// systemd installs for MemoryDenyWriteExecute=yes (src/shared/seccomp-util.c): mmap
// with both PROT_WRITE and PROT_EXEC, mprotect or pkey_mprotect adding PROT_EXEC, and
// shmat with SHM_EXEC fail with EPERM; with "kill-mmap", any mmap or memfd_create kills
// the process (SECCOMP_RET_KILL_PROCESS). It calls compute() and prints its value every
// 100 ms until SIGTERM. In "mdwe" mode SIGUSR1 makes it try a write+exec mmap and print
// `wx=EPERM` (the filter holds) or `wx=mapped`.
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/shm.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define PATCHABLE __attribute__((noipa))

static volatile sig_atomic_t stopping, probing;
static void on_term(int sig) { (void)sig; stopping = 1; }
static void on_usr1(int sig) { (void)sig; probing = 1; }

volatile int scale = 2;
PATCHABLE int compute(int x) { return x * scale; }

#define ARG_LOW(n) offsetof(struct seccomp_data, args[n])
#define DENY BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM)
#define ALLOW BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW)

// The low 32 bits of each flag argument are what the kernel reads (an int).
static struct sock_filter mdwe[] = {
    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_mmap, 0, 5),
    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, ARG_LOW(2)),
    BPF_STMT(BPF_ALU | BPF_AND | BPF_K, PROT_WRITE | PROT_EXEC),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, PROT_WRITE | PROT_EXEC, 0, 1),
    DENY,
    ALLOW,
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_mprotect, 1, 0),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_pkey_mprotect, 0, 4),
    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, ARG_LOW(2)),
    BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, PROT_EXEC, 0, 1),
    DENY,
    ALLOW,
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_shmat, 0, 4),
    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, ARG_LOW(2)),
    BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, SHM_EXEC, 0, 1),
    DENY,
    ALLOW,
    ALLOW,
};

static struct sock_filter kill_mmap[] = {
    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_mmap, 1, 0),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_memfd_create, 0, 1),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
    ALLOW,
};

int main(int argc, char **argv) {
  int killing = argc > 1 && strcmp(argv[1], "kill-mmap") == 0;
  signal(SIGTERM, on_term);
  signal(SIGINT, on_term);
  signal(SIGUSR1, on_usr1);
  setvbuf(stdout, NULL, _IOLBF, 0);
  printf("pid=%d\n", (int)getpid());  // stdout's buffer is allocated before the filter
  struct sock_fprog program = killing
                                  ? (struct sock_fprog){sizeof kill_mmap / sizeof kill_mmap[0], kill_mmap}
                                  : (struct sock_fprog){sizeof mdwe / sizeof mdwe[0], mdwe};
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &program) != 0) {
    perror("seccomp");
    return 1;
  }
  struct timespec ts = {0, 100 * 1000000L};
  for (long tick = 0; !stopping; tick++) {
    if (probing && !killing) {
      probing = 0;
      void *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      printf("wx=%s\n", p == MAP_FAILED ? (errno == EPERM ? "EPERM" : "failed") : "mapped");
    }
    printf("tick=%ld compute=%d\n", tick, compute(21));
    nanosleep(&ts, NULL);
  }
  printf("exiting\n");
  return 0;
}
