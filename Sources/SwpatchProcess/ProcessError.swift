import SwpatchBase
import SystemPackage

/// Everything that can go wrong while controlling a target process.
public enum ProcessError: Error, CustomStringConvertible, Sendable {
  case noSuchProcess(pid: Int32)
  case kernelThread(pid: Int32)
  case alreadyTraced(pid: Int32, tracer: Int32, tracerName: String)
  case permissionDenied(pid: Int32, what: String)
  case processExited(pid: Int32)
  case ptrace(request: String, tid: Int32, errno: Errno)
  case memory(address: UInt64, count: Int, write: Bool, errno: Errno?)
  case unexpectedStop(tid: Int32, detail: String)
  case remoteCallTimedOut(function: String, tid: Int32, seconds: Double)
  case remoteCallFaulted(function: String, tid: Int32, signal: Int32, rip: UInt64)
  case remoteSyscallFailed(name: String, errno: Errno)
  case noSyscallInstruction(pid: Int32)
  case io(path: String, errno: Errno)
  case cannotStart(path: String, errno: Errno)
  /// `tid` is a thread of process `pid`, not a process.
  case notAProcess(tid: Int32, pid: Int32)
  /// The daemon (or whoever is running swpatch) was asked to patch itself.
  case ownProcess(pid: Int32)
  /// Seccomp strict mode: any system call swpatch injects would kill the target.
  case seccompStrict(pid: Int32)
  /// A seccomp filter that swpatch cannot suspend while it injects calls.
  case seccompFilter(pid: Int32)
  /// A thread waits in the kernel for its vfork child, and cannot be stopped until the
  /// child execs or exits.
  case vforkInProgress(pid: Int32, tid: Int32)
  /// A thread did not stop within the bound; the target was resumed unchanged.
  case stopTimedOut(pid: Int32, tid: Int32, seconds: Double)
  /// A stopped target was used after its `withStopped` scope had let it go.
  case notStopped(pid: Int32)
  /// A remote call was asked for before a trampoline page held the hijack stub.
  case noHijackStub(pid: Int32)
  /// The bytes where the hijack stub was said to be are not the stub.
  case notHijackStub(address: UInt64)

  public var description: String {
    switch self {
    case .cannotStart(let path, let errno):
      return "cannot start \(path): \(errno)"
    case .noSuchProcess(let pid):
      return "no process with pid \(pid) (check the pid with `ps -p \(pid)`)"
    case .kernelThread(let pid):
      return "pid \(pid) is a kernel thread; only user-space processes can be patched"
    case .alreadyTraced(let pid, let tracer, let name):
      return
        "pid \(pid) is already traced by pid \(tracer) (\(name)); detach that debugger or tracer first"
    case .permissionDenied(let pid, let what):
      return "permission denied to \(what) pid \(pid) (run as root or as the process's owner)"
    case .processExited(let pid):
      return "process \(pid) exited during the operation"
    case .ptrace(let request, let tid, let errno):
      return "ptrace \(request) on thread \(tid) failed: \(errno)"
    case .memory(let address, let count, let write, let errno):
      let verb = write ? "write" : "read"
      let why = errno.map { ": \($0)" } ?? " (short transfer)"
      return "cannot \(verb) \(count) bytes at \(hexAddress(address)) in the target\(why)"
    case .unexpectedStop(let tid, let detail):
      return "thread \(tid) stopped unexpectedly: \(detail)"
    case .remoteCallTimedOut(let function, let tid, let seconds):
      return
        "\(function) in the target (thread \(tid)) did not return within \(seconds) s; the thread was restored (it may hold the loader or malloc lock; retry later)"
    case .remoteCallFaulted(let function, let tid, let signal, let rip):
      return
        "\(function) in the target (thread \(tid)) faulted with signal \(signal) at \(hexAddress(rip)); the thread was restored"
    case .remoteSyscallFailed(let name, let errno):
      return "\(name) in the target failed: \(errno)"
    case .noSyscallInstruction(let pid):
      return "found no syscall instruction in the executable mappings of pid \(pid)"
    case .io(let path, let errno):
      return "cannot read \(path): \(errno)"
    case .notAProcess(let tid, let pid):
      return "thread \(tid) belongs to process \(pid); patch pid \(pid)"
    case .ownProcess(let pid):
      return "pid \(pid) is swpatchd itself; swpatch cannot patch its own daemon"
    case .seccompStrict(let pid):
      return
        "pid \(pid) runs in seccomp strict mode, where any system call swpatch makes in it would kill it; it cannot be patched"
    case .seccompFilter(let pid):
      return
        "pid \(pid) runs under a seccomp filter that swpatch cannot suspend (PTRACE_O_SUSPEND_SECCOMP needs CAP_SYS_ADMIN and an unfiltered swpatchd); nothing was changed"
    case .vforkInProgress(let pid, let tid):
      return
        "thread \(tid) of pid \(pid) is waiting for its vfork child, and cannot be stopped until the child execs or exits; nothing was changed (retry later)"
    case .stopTimedOut(let pid, let tid, let seconds):
      return
        "thread \(tid) of pid \(pid) did not stop within \(seconds) s (blocked in the kernel?); the target was resumed unchanged (retry later)"
    case .notStopped(let pid):
      return
        "pid \(pid) is no longer held stopped: a stopped target is usable only inside its withStopped scope"
    case .noHijackStub(let pid):
      return "no hijack stub is mapped in pid \(pid) yet; a remote call needs one"
    case .notHijackStub(let address):
      return "the bytes at 0x\(String(address, radix: 16)) in the target are not swpatch's hijack stub"
    }
  }
}

extension ProcessError: CodedError {
  public var code: String {
    switch self {
    case .noSuchProcess: return "no_such_process"
    case .kernelThread: return "kernel_thread"
    case .alreadyTraced: return "already_traced"
    case .permissionDenied: return "permission_denied"
    case .processExited: return "process_exited"
    case .remoteCallTimedOut: return "remote_call_timeout"
    case .remoteCallFaulted: return "remote_call_fault"
    case .notAProcess: return "not_a_process"
    case .ownProcess: return "own_process"
    case .seccompStrict: return "seccomp_strict"
    case .seccompFilter: return "seccomp_filter"
    case .vforkInProgress: return "vfork_in_progress"
    case .stopTimedOut: return "stop_timeout"
    case .ptrace, .memory, .unexpectedStop, .remoteSyscallFailed, .noSyscallInstruction, .io, .cannotStart,
      .notStopped, .noHijackStub, .notHijackStub:
      return "process_control"
    }
  }
}
