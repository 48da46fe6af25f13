import Glibc

/// What process control shows of a held thread's registers: a value, so nothing above
/// it can hand the kernel a half-edited `user_regs_struct`.
public struct Registers: Sendable, Equatable {
  /// Where the thread resumes.
  public let rip: UInt64
  public let rsp: UInt64
  /// The thread's TLS base: glibc keeps the same value at `fs:0`, so code running in the
  /// thread can tell which thread it is (the transition's gates do).
  public let fsBase: UInt64

  init(_ regs: user_regs_struct) {
    rip = regs.rip
    rsp = regs.rsp
    fsBase = regs.fs_base
  }
}

/// The kernel's syscall-restart errnos (include/linux/errno.h). Kernel-internal, so no
/// uapi header has them; a thread stopped inside a blocking system call shows one in
/// rax, and the kernel's signal path moves its rip back onto the `syscall` (2 bytes)
/// when it resumes with orig_rax >= 0.
enum RestartErrno {
  static let restartSys: Int64 = -512  // -ERESTARTSYS
  static let restartNoIntr: Int64 = -513  // -ERESTARTNOINTR
  static let restartNoHand: Int64 = -514  // -ERESTARTNOHAND
  /// Restarted through restart_syscall from the thread's restart block (nanosleep,
  /// poll, futex with a timeout).
  static let restartRestartBlock: Int64 = -516  // -ERESTART_RESTARTBLOCK
  static let all: Set<Int64> = [restartSys, restartNoIntr, restartNoHand, restartRestartBlock]

  /// Whether a thread stopped with `regs` is in a system call the kernel restarts on
  /// resume (rewinding rip by 2).
  static func restarts(_ regs: user_regs_struct) -> Bool {
    Int64(bitPattern: regs.orig_rax) >= 0 && all.contains(Int64(bitPattern: regs.rax))
  }
}
