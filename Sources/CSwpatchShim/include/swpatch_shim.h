// What Swift cannot import from glibc: the variadic ptrace(2) and syscall(2),
// and the wait-status macros. Kept tiny; everything else imports directly.
#ifndef SWPATCH_SHIM_H
#define SWPATCH_SHIM_H

#include <stdint.h>
#include <sys/types.h>
#include <sys/user.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <linux/memfd.h>
#include <spawn.h>

/// ptrace(2). Returns the kernel's result, or -1 with *err set to errno.
long swp_ptrace(int request, pid_t pid, uint64_t addr, uint64_t data, int *err);

/// PTRACE_GETREGSET / PTRACE_SETREGSET with an iovec over buf. On return
/// *len holds the size the kernel used.
long swp_ptrace_regset(int request, pid_t pid, int note_type, void *buf, size_t *len, int *err);

/// waitpid(2) with __WALL added, retrying on EINTR. Returns the pid, 0 for
/// WNOHANG with nothing to report, or -1 with *err set.
pid_t swp_waitpid(pid_t pid, int *status, int options, int *err);

/// A raw syscall with up to six arguments. Returns -1 with *err on failure.
long swp_syscall6(long nr, long a1, long a2, long a3, long a4, long a5, long a6, int *err);

/// tgkill(2): a signal to one thread.
int swp_tgkill(pid_t tgid, pid_t tid, int sig);

// Names the calling thread (at most 15 bytes), as ps and gdb show it.
void swp_set_thread_name(const char *name);

int swp_wifstopped(int status);
int swp_wifexited(int status);
int swp_wifsignaled(int status);
int swp_wstopsig(int status);
int swp_wexitstatus(int status);
int swp_wtermsig(int status);
/// The PTRACE_EVENT_* in a stop status (status >> 16), 0 for none.
int swp_wptrace_event(int status);

/// Constants whose macros do not import cleanly.
enum {
  SWP_WALL = 0x40000000,
  SWP_NT_PRSTATUS = 1,
  SWP_NT_X86_XSTATE = 0x202,
  SWP_PTRACE_O_TRACESYSGOOD = 1,
  SWP_PTRACE_O_TRACECLONE = 8,
  SWP_PTRACE_EVENT_CLONE = 3,
  SWP_PTRACE_EVENT_STOP = 128,
  /// PTRACE_O_SUSPEND_SECCOMP (linux/ptrace.h, which clashes with sys/ptrace.h).
  SWP_PTRACE_O_SUSPEND_SECCOMP = 1 << 21,
};

/// The kernel's numbers swpatch uses, from the headers that define them, so that
/// Swift names each once (the bare macros do not all reach Swift).
enum {
  SWP_SYS_CLOSE = SYS_close,
  SWP_SYS_MMAP = SYS_mmap,
  SWP_SYS_MUNMAP = SYS_munmap,
  SWP_SYS_GETPID = SYS_getpid,
  SWP_SYS_CLONE = SYS_clone,
  SWP_SYS_VFORK = SYS_vfork,
  SWP_SYS_CLONE3 = SYS_clone3,
  SWP_SYS_MEMFD_CREATE = SYS_memfd_create,
  SWP_SYS_PIDFD_OPEN = SYS_pidfd_open,
  SWP_PROT_READ = PROT_READ,
  SWP_PROT_EXEC = PROT_EXEC,
  SWP_PROT_WRITE = PROT_WRITE,
  SWP_MAP_PRIVATE = MAP_PRIVATE,
  SWP_MAP_ANONYMOUS = MAP_ANONYMOUS,
  SWP_MAP_FIXED_NOREPLACE = MAP_FIXED_NOREPLACE,
  SWP_MFD_CLOEXEC = MFD_CLOEXEC,
  SWP_SO_PEERCRED = SO_PEERCRED,
};

/// struct ucred, the answer to SO_PEERCRED, which glibc declares only under
/// _GNU_SOURCE; shim.c checks that the layouts agree.
struct swp_ucred {
  pid_t pid;
  uid_t uid;
  gid_t gid;
};

/// POSIX_SPAWN_SETSID, which spawn.h defines only under _GNU_SOURCE.
short swp_posix_spawn_setsid(void);

/// posix_spawn_file_actions_addclosefrom_np(3) (glibc 2.34+, behind _GNU_SOURCE): the
/// spawned child closes every descriptor from `from` up, so it inherits no pipe.
int swp_spawn_addclosefrom(posix_spawn_file_actions_t *actions, int from);

/// fork + PTRACE_TRACEME + execve, for `swpatch run`: the child keeps our standard
/// descriptors, gets an empty signal mask and default dispositions, closes every other
/// descriptor, and stops with SIGTRAP right after its execve (before the dynamic loader
/// runs). Returns the child's pid, or -1 with `*err` set. A failed execve exits 127.
pid_t swp_spawn_traced(const char *path, char *const argv[], char *const envp[], int *err);

/// Passes SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2, SIGWINCH and SIGCONT
/// sent to this process on to `child`, except those the kernel sent on behalf of a
/// terminal (si_code SI_KERNEL), which the child, in the same foreground process group,
/// got itself.
void swp_forward_signals_to(pid_t child);

#endif
