// _GNU_SOURCE only here: in the public header it breaks Foundation imports.
#define _GNU_SOURCE
#include "swpatch_shim.h"

#include <errno.h>
#include <stddef.h>
#include <spawn.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>
#include <signal.h>
#include <stdlib.h>
#include <pthread.h>

long swp_ptrace(int request, pid_t pid, uint64_t addr, uint64_t data, int *err) {
  errno = 0;
  long r = ptrace((enum __ptrace_request)request, pid, (void *)addr, (void *)data);
  *err = errno;
  // PEEK requests may legitimately return -1; callers check *err.
  return r;
}

long swp_ptrace_regset(int request, pid_t pid, int note_type, void *buf, size_t *len, int *err) {
  struct iovec iov = {.iov_base = buf, .iov_len = *len};
  errno = 0;
  long r = ptrace((enum __ptrace_request)request, pid, (void *)(long)note_type, &iov);
  *err = errno;
  *len = iov.iov_len;
  return r;
}

pid_t swp_waitpid(pid_t pid, int *status, int options, int *err) {
  pid_t r;
  do {
    r = waitpid(pid, status, options | __WALL);
  } while (r < 0 && errno == EINTR);
  *err = r < 0 ? errno : 0;
  return r;
}

long swp_syscall6(long nr, long a1, long a2, long a3, long a4, long a5, long a6, int *err) {
  long r = syscall(nr, a1, a2, a3, a4, a5, a6);
  *err = r < 0 ? errno : 0;
  return r;
}

int swp_tgkill(pid_t tgid, pid_t tid, int sig) { return tgkill(tgid, tid, sig); }

int swp_wifstopped(int status) { return WIFSTOPPED(status); }
int swp_wifexited(int status) { return WIFEXITED(status); }
int swp_wifsignaled(int status) { return WIFSIGNALED(status); }
int swp_wstopsig(int status) { return WSTOPSIG(status); }
int swp_wexitstatus(int status) { return WEXITSTATUS(status); }
int swp_wtermsig(int status) { return WTERMSIG(status); }
int swp_wptrace_event(int status) { return (status >> 16) & 0xff; }

int swp_spawn_addclosefrom(posix_spawn_file_actions_t *actions, int from) {
  return posix_spawn_file_actions_addclosefrom_np(actions, from);
}

short swp_posix_spawn_setsid(void) { return POSIX_SPAWN_SETSID; }

_Static_assert(sizeof(struct swp_ucred) == sizeof(struct ucred), "struct ucred changed");
_Static_assert(offsetof(struct swp_ucred, uid) == offsetof(struct ucred, uid), "struct ucred changed");
_Static_assert(offsetof(struct swp_ucred, gid) == offsetof(struct ucred, gid), "struct ucred changed");

pid_t swp_spawn_traced(const char *path, char *const argv[], char *const envp[], int *err) {
  pid_t pid = fork();
  if (pid < 0) {
    *err = errno;
    return -1;
  }
  if (pid == 0) {
    // Only async-signal-safe calls from here: the parent may have many threads.
    sigset_t none;
    sigemptyset(&none);
    for (int sig = 1; sig < NSIG; sig++) signal(sig, SIG_DFL);
    sigprocmask(SIG_SETMASK, &none, NULL);
    syscall(SYS_close_range, 3, ~0U, 0);
    if (ptrace(PTRACE_TRACEME, 0, NULL, NULL) != 0) _exit(127);
    execve(path, argv, envp);
    _exit(127);
  }
  return pid;
}

static volatile pid_t forward_child;

static void forward_signal(int sig, siginfo_t *info, void *context) {
  (void)context;
  if (info->si_code == SI_KERNEL) return;
  if (forward_child > 0) kill(forward_child, sig);
}

void swp_forward_signals_to(pid_t child) {
  forward_child = child;
  static const int forwarded[] = {SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2, SIGWINCH, SIGCONT};
  struct sigaction action = {0};
  action.sa_sigaction = forward_signal;
  action.sa_flags = SA_SIGINFO | SA_RESTART;
  sigemptyset(&action.sa_mask);
  for (size_t i = 0; i < sizeof forwarded / sizeof forwarded[0]; i++) {
    sigaction(forwarded[i], &action, NULL);
    sigset_t one;
    sigemptyset(&one);
    sigaddset(&one, forwarded[i]);
    pthread_sigmask(SIG_UNBLOCK, &one, NULL);
  }
}

void swp_set_thread_name(const char *name) { pthread_setname_np(pthread_self(), name); }
