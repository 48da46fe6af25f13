import CSwpatchShim
import Glibc

/// The code a borrowed thread runs after a remote call or system call, so that it gets
/// its own registers back even if swpatch is killed while it is borrowed.
///
/// It lives in the header of a trampoline page (58 bytes, which the target can execute
/// but not write) and reads a block swpatch writes below the thread's red zone first:
///
/// ```
/// block  +0      skip: offset from block to the general registers
///        +64     XSAVE image of the thread (64-byte aligned)
///        +skip   r15 r14 r13 r12 r11 r10 r9 r8 rdi rsi rbp rbx rdx rcx rax rflags, then
///                rsp' = rsp - 136
/// rsp - 136      rip to resume at (below the 128-byte red zone, which is never touched)
/// ```
///
/// A remote call returns to `callReturn` with rsp = block; a remote system call starts at
/// `syscallEntry` with rsp = block. With a tracer, the thread is driven with
/// PTRACE_SYSCALL: the call's return shows as the entry stop of a `getpid` at
/// `callReturnMarker` (its result is copied to rdi), a system call's result at its exit
/// stop, and the tracer puts the registers back itself. With the tracer dead, the thread
/// falls through into the restore: xrstor, pops, popfq, `pop rsp` and `ret 128`, landing
/// on its own rip and rsp with every register and flag as saved. A thread that was in a
/// restartable system call resumes on its `syscall` instruction with rax = the call
/// number, as the kernel would have restarted it.
public enum HijackStub {
  /// Where a remote call returns to.
  public static let callReturn: UInt64 = 0
  /// rip at the syscall-entry stop of the marker `getpid` after a call has returned.
  static let callReturnMarker: UInt64 = 10
  /// Where a remote system call starts (a `syscall` instruction).
  static let syscallEntry: UInt64 = 12
  /// rip at the stops of that system call.
  static let afterSyscall: UInt64 = 14
  static let getpid = UInt64(SWP_SYS_GETPID)

  public static let bytes: [UInt8] = [
    0x48, 0x89, 0xc7,  // mov %rax,%rdi         the call's result, for the tracer
    0xb8, 0x27, 0x00, 0x00, 0x00,  // mov $39,%eax (getpid): the marker
    0x0f, 0x05,  // syscall
    0xeb, 0x02,  // jmp restore
    0x0f, 0x05,  // syscallEntry: syscall
    // restore:
    0x83, 0xc8, 0xff,  // or $-1,%eax            xrstor mask: every component
    0x83, 0xca, 0xff,  // or $-1,%edx
    0x48, 0x0f, 0xae, 0x6c, 0x24, 0x40,  // xrstor64 0x40(%rsp)
    0x48, 0x03, 0x24, 0x24,  // add (%rsp),%rsp   skip to the general registers
    0x41, 0x5f, 0x41, 0x5e, 0x41, 0x5d, 0x41, 0x5c,  // pop r15 r14 r13 r12
    0x41, 0x5b, 0x41, 0x5a, 0x41, 0x59, 0x41, 0x58,  // pop r11 r10 r9 r8
    0x5f, 0x5e, 0x5d, 0x5b, 0x5a, 0x59, 0x58,  // pop rdi rsi rbp rbx rdx rcx rax
    0x9d,  // popfq
    0x5c,  // pop %rsp                   rsp - 136
    0xc2, 0x80, 0x00,  // ret $128            rip, and rsp back over the red zone
  ]

  /// The block for a thread with registers `saved` and XSAVE image `xsave`, placed
  /// below `top` (at most rsp - 136); returns its address and bytes, and the resume rip
  /// word to write at rsp - 136.
  static func block(
    saved: user_regs_struct, xsave: [UInt8], below top: UInt64
  ) -> (address: UInt64, bytes: [UInt8], resume: UInt64) {
    let resume = resumePoint(saved)
    let general: [UInt64] = [
      saved.r15, saved.r14, saved.r13, saved.r12, saved.r11, saved.r10, saved.r9, saved.r8,
      saved.rdi, saved.rsi, saved.rbp, saved.rbx, saved.rdx, saved.rcx, resume.rax, saved.eflags,
      saved.rsp &- 136,
    ]
    let generalAt = (top &- UInt64(general.count * 8)) & ~7
    let xsaveAt = (generalAt &- UInt64(xsave.count)) & ~63
    let address = xsaveAt &- 64
    var bytes = [UInt8](repeating: 0, count: Int(top - address))
    func put(_ value: UInt64, at offset: Int) {
      withUnsafeBytes(of: value.littleEndian) { bytes.replaceSubrange(offset..<offset + 8, with: $0) }
    }
    put(generalAt - address, at: 0)
    bytes.replaceSubrange(64..<64 + xsave.count, with: xsave)
    for (i, value) in general.enumerated() { put(value, at: Int(generalAt - address) + i * 8) }
    return (address, bytes, resume.rip)
  }

  /// Where and with which rax a thread resumes: a restartable system call it was in
  /// (orig_rax >= 0, rax = -ERESTART*) starts again from its `syscall` instruction.
  static func resumePoint(_ regs: user_regs_struct) -> (rip: UInt64, rax: UInt64) {
    if RestartErrno.restarts(regs) {
      return (regs.rip &- 2, regs.orig_rax)
    }
    return (regs.rip, regs.rax)
  }
}
