import CSwpatchShim
import FoundationEssentials
import Glibc
import SystemPackage

extension ChildProcess {
  /// Starts `path args...` as our child and leaves it stopped (SIGSTOP, a group stop) at
  /// its entry point: the dynamic loader has mapped and relocated every library it
  /// needs and run their constructors, and the program's own start-up code and `main`
  /// have not run. For `swpatch run`, which patches it there and lets it go with
  /// SIGCONT. It shares our standard descriptors and process group.
  ///
  /// How: the child is traced from its `execve` (PTRACE_TRACEME), an `int3` is put at
  /// its entry point (`AT_ENTRY` of the auxiliary vector) and taken out again when hit,
  /// then the child is detached with SIGSTOP, so that no tracer is left for the daemon's
  /// own seize. All ptrace requests are made from the calling thread (the kernel binds a
  /// tracee to the thread that traces it). If we die before the detach, the kernel kills
  /// the child (PTRACE_O_EXITKILL) rather than let it run into the `int3`.
  public static func startStoppedAtEntry(_ path: String, _ args: [String]) throws(ProcessError) -> pid_t {
    let environment = ProcessInfo.processInfo.environment.map { "\($0.key)=\($0.value)" }
    let argv = ([path] + args).map { strdup($0) } + [nil]
    let envp = environment.map { strdup($0) } + [nil]
    defer { (argv + envp).forEach { free($0) } }
    var err: Int32 = 0
    let pid = swp_spawn_traced(path, argv, envp, &err)
    guard pid > 0 else { throw .cannotStart(path: path, errno: Errno(rawValue: err)) }
    do {
      try stopAtEntry(pid, path: path)
      return pid
    } catch {
      kill(pid, SIGKILL)
      _ = reap(pid)
      throw error
    }
  }

  private static func stopAtEntry(_ pid: pid_t, path: String) throws(ProcessError) {
    // The SIGTRAP after execve, or the exit of a child whose execve failed.
    guard case .signal(SIGTRAP) = try WaitEvent.next(pid) else {
      throw .cannotStart(path: path, errno: .noSuchFileOrDirectory)
    }
    let exitKill: UInt64 = 0x10_0000  // PTRACE_O_EXITKILL
    try Ptrace.call(.setOptions, pid, 0, exitKill)
    guard let entry = entryPoint(of: pid) else {
      throw .io(path: "/proc/\(pid)/auxv", errno: .ioError)
    }
    let mem = "/proc/\(pid)/mem"
    guard let original = readByte(mem, at: entry), writeByte(mem, at: entry, 0xcc) else {
      throw .memory(address: entry, count: 1, write: true, errno: nil)
    }
    var pending: UInt64 = 0
    while true {
      try Ptrace.call(.cont, pid, 0, pending)
      guard let event = try WaitEvent.next(pid), event != .gone else { throw .processExited(pid: pid) }
      guard case .signal(let signal) = event else {
        pending = 0
        continue
      }
      if signal == SIGTRAP {
        var regs = try Ptrace.getRegisters(pid)
        if regs.rip == entry + 1 {
          guard writeByte(mem, at: entry, original) else {
            throw .memory(address: entry, count: 1, write: true, errno: nil)
          }
          regs.rip = entry
          try Ptrace.setRegisters(pid, regs)
          break
        }
      }
      // A signal that arrived on the way (a ^C) is delivered as it would have been.
      pending = UInt64(signal)
    }
    try Ptrace.call(.detach, pid, 0, UInt64(SIGSTOP))
    // Wait for the group stop, so that the daemon seizes a stopped process.
    var status: Int32 = 0
    var werr: Int32 = 0
    while swp_waitpid(pid, &status, WUNTRACED, &werr) < 0 && werr == EINTR {}
    guard swp_wifstopped(status) != 0 else { throw .processExited(pid: pid) }
  }

  /// `AT_ENTRY` (9) of `pid`'s auxiliary vector: the program's entry point.
  private static func entryPoint(of pid: pid_t) -> UInt64? {
    guard let auxv = ProcFile.bytes("/proc/\(pid)/auxv") else { return nil }
    return auxv.withUnsafeBytes { raw -> UInt64? in
      for i in stride(from: 0, to: raw.count - 15, by: 16)
      where raw.loadUnaligned(fromByteOffset: i, as: UInt64.self) == 9 {
        return raw.loadUnaligned(fromByteOffset: i + 8, as: UInt64.self)
      }
      return nil
    }
  }

  private static func readByte(_ file: String, at address: UInt64) -> UInt8? {
    let fd = open(file, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var byte: UInt8 = 0
    return pread(fd, &byte, 1, off_t(Int64(bitPattern: address))) == 1 ? byte : nil
  }

  private static func writeByte(_ file: String, at address: UInt64, _ value: UInt8) -> Bool {
    let fd = open(file, O_WRONLY | O_CLOEXEC)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    var byte = value
    return pwrite(fd, &byte, 1, off_t(Int64(bitPattern: address))) == 1
  }

  /// Passes the signals a supervisor sends (SIGTERM, SIGINT, SIGHUP, SIGUSR1...) on to
  /// `child` (see `swp_forward_signals_to`).
  public static func forwardSignals(to child: pid_t) {
    swp_forward_signals_to(child)
  }

  /// Waits for our child `pid` to end (through job-control stops) and reaps it: its exit
  /// status, or 128 + the signal that killed it.
  public static func waitForExit(_ pid: pid_t) -> Int32 {
    var status: Int32 = 0
    while true {
      let r = waitpid(pid, &status, 0)
      if r == pid { return exitCode(status) }
      if r < 0 && errno != EINTR { return 1 }
    }
  }
}
