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
      return "cannot \(verb) \(count) bytes at 0x\(String(address, radix: 16)) in the target\(why)"
    case .unexpectedStop(let tid, let detail):
      return "thread \(tid) stopped unexpectedly: \(detail)"
    case .remoteCallTimedOut(let function, let tid, let seconds):
      return
        "\(function) in the target (thread \(tid)) did not return within \(seconds) s; the thread was restored (it may hold the loader or malloc lock; retry later)"
    case .remoteCallFaulted(let function, let tid, let signal, let rip):
      return
        "\(function) in the target (thread \(tid)) faulted with signal \(signal) at 0x\(String(rip, radix: 16)); the thread was restored"
    case .remoteSyscallFailed(let name, let errno):
      return "\(name) in the target failed: \(errno)"
    case .noSyscallInstruction(let pid):
      return "found no syscall instruction in the executable mappings of pid \(pid)"
    case .io(let path, let errno):
      return "cannot read \(path): \(errno)"
    }
  }
}
