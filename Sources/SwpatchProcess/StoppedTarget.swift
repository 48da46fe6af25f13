import CSwpatchShim
import FoundationEssentials
import Glibc
import SystemPackage

/// A target process with every thread held in a ptrace stop.
///
/// Handed out only by `TracerThread.withStopped`, on the tracer thread (the kernel binds
/// tracees to the thread that seized them), and let go when that scope ends: every use
/// after it throws `notStopped`, so a reference that escapes cannot touch the target.
/// Nothing of the target runs between `stop` and `resume`, except a thread briefly
/// borrowed for a remote syscall or call, which is restored exactly.
public final class StoppedTarget {
  public let pid: Int32
  /// With the pid, which process this is: a liveness check compares both.
  private let startTime: UInt64
  /// Where the process's shared /proc files are read (see `TargetProcess.directory`).
  let directory: String
  /// The options every thread is seized with.
  private let seizeOptions: UInt64
  /// Thread ids held, in the order they were seized.
  public private(set) var threads: [Int32] = []
  /// Signals that arrived while a thread was held; passed on at resume, once each.
  private var pendingSignals: [Int32: [Int32]] = [:]
  /// Threads that were in a group stop (SIGSTOP, job control) when seized.
  public private(set) var groupStopped: Set<Int32> = []
  /// Every thread ever held, including ones that exited since.
  private var held: Set<Int32> = []
  /// Threads held in a signal-delivery-stop of the first of their pending signals: the
  /// detach passes that one on with its original siginfo.
  private var inSignalStop: Set<Int32> = []
  private let memory: FileDescriptor
  private var syscallInstruction: UInt64?
  private let firstStop: ContinuousClock.Instant
  /// How long the target was held, set by `resume`: from the first stop to the resume,
  /// less the time its other threads ran while one was borrowed.
  public private(set) var stoppedFor: Duration = .zero
  /// When `releaseOthers` let threads run, and how long they have run in all.
  private var releasedAt: ContinuousClock.Instant?
  private var ranFor: Duration = .zero

  private init(process: TargetProcess, memory: FileDescriptor, seizeOptions: UInt64) {
    self.pid = process.pid
    self.startTime = process.startTime
    self.directory = process.directory
    self.memory = memory
    self.seizeOptions = seizeOptions
    self.firstStop = .now
  }

  /// How long stopping every thread may take before the target is resumed unchanged: a
  /// thread blocked where no signal reaches it (a vfork parent) stops for nobody.
  public static let stopBound: Duration = .seconds(2)

  /// Seizes and interrupts every thread of `pid`, re-scanning /proc/PID/task until no
  /// thread appears that is not held (threads may be created while we stop the others).
  static func stop(pid: Int32) throws(ProcessError) -> StoppedTarget {
    let process = try TargetProcess.inspect(pid)
    try process.checkPatchable()
    // Refused before any thread is stopped: the others would wait for it in vain.
    if let tid = TargetProcess.threadInVfork(of: pid) { throw .vforkInProgress(pid: pid, tid: tid) }
    let memory: FileDescriptor
    do {
      memory = try FileDescriptor.open(FilePath(process.directory + "/mem"), .readWrite)
    } catch {
      throw .permissionDenied(pid: pid, what: "open the memory of")
    }
    // Under a seccomp filter the calls we inject could be refused or kill the target;
    // suspended, the target's own calls are unfiltered too, but only while seized.
    let suspend = process.seccomp == TargetProcess.seccompFilter ? Self.suspendSeccomp : 0
    let target = StoppedTarget(process: process, memory: memory, seizeOptions: Self.options | suspend)
    do {
      try target.seizeAllThreads()
    } catch {
      target.resume()
      throw error
    }
    return target
  }

  /// Options of every seized thread: syscall stops are marked (SIGTRAP | 0x80), and a
  /// thread the target creates while one of its threads runs under us (being seized, or
  /// borrowed for a remote call) is attached by the kernel and starts stopped, so it can
  /// never run unseen while memory is written.
  private static let options = UInt64(SWP_PTRACE_O_TRACESYSGOOD | SWP_PTRACE_O_TRACECLONE)
  /// PTRACE_O_SUSPEND_SECCOMP: needs CAP_SYS_ADMIN, a tracer under no seccomp itself, and
  /// a kernel with CONFIG_CHECKPOINT_RESTORE.
  private static let suspendSeccomp = UInt64(SWP_PTRACE_O_SUSPEND_SECCOMP)

  /// The thread that runs remote calls and system calls: the main thread, unless it
  /// has exited (pthread_exit) while others run on.
  public var mainThread: Int32 { threads.contains(pid) ? pid : threads.first ?? pid }

  /// Threads whose stop has been waited for since they were seized or adopted.
  private var settled: Set<Int32> = []
  /// Threads still listed that have exited: a main thread that called pthread_exit.
  private var exited: Set<Int32> = []

  /// Holds every thread listed in /proc/PID/task, scanning again until a scan finds no
  /// thread that is not held. Threads announced by clone events are held as they come.
  /// Gives up (the caller resumes) when a thread has not stopped within `stopBound`.
  private func seizeAllThreads() throws(ProcessError) {
    let deadline = ContinuousClock.now + Self.stopBound
    for _ in 0..<1000 {
      let listed = TargetProcess.threadIDs(of: pid)
      if listed.isEmpty { throw .processExited(pid: pid) }
      let fresh = listed.filter { !held.contains($0) && !exited.contains($0) }
      if fresh.isEmpty { return }
      var seized: [Int32] = []
      for tid in fresh where try seize(tid) { seized.append(tid) }
      for tid in seized where !settled.contains(tid) { try waitUntilHeld(tid, by: deadline) }
    }
    throw .unexpectedStop(tid: pid, detail: "threads kept appearing while stopping the target")
  }

  /// Seizes and interrupts one thread; false if it exited first. A thread the kernel has
  /// already attached to us (PTRACE_O_TRACECLONE) refuses a second seize with EPERM; it
  /// is ours and starts in a stop of its own. A seized thread is listed at once, so
  /// that `resume` lets it go whatever happens next.
  private func seize(_ tid: Int32) throws(ProcessError) -> Bool {
    do {
      try Ptrace.call(.seize, tid, 0, seizeOptions)
      track(tid)
      do {
        try Ptrace.call(.interrupt, tid)
      } catch .ptrace(_, _, let errno) where errno == .noSuchProcess {
        // Exiting since the seize: the wait for its stop reaps it instead.
      }
      return true
    } catch .ptrace(_, _, let errno) where errno == .noSuchProcess && tid != pid {
      return false  // the thread exited between the scan and the seize
    } catch .ptrace(_, _, let errno) where errno == .notPermitted || errno == .invalidArgument {
      if TargetProcess.isTracedByUs(tid, in: pid) {
        track(tid)
        return true
      }
      // An exited thread cannot be seized; a main thread that called pthread_exit stays
      // a zombie while the others run.
      let state = TargetProcess.threadState(tid, in: pid)
      if state == nil || state == "Z" || state == "X" {
        if TargetProcess.isAlive(pid: pid, startTime: startTime) {
          exited.insert(tid)
          return false
        }
        throw .processExited(pid: pid)
      }
      let now = try TargetProcess.inspect(pid)
      if now.tracerPid != 0 && !TargetProcess.isOurThread(now.tracerPid) {
        try now.checkPatchable()
      }
      if seizeOptions & Self.suspendSeccomp != 0 { throw .seccompFilter(pid: pid) }
      throw .permissionDenied(pid: pid, what: "trace")
    }
  }

  /// Lists `tid` among the threads held (and to let go at resume), once.
  private func track(_ tid: Int32) {
    guard held.insert(tid).inserted else { return }
    threads.append(tid)
  }

  /// Waits until `tid`, interrupted, sits in an interrupt stop, a group stop or a
  /// signal-delivery stop. Any other stop (a clone event, a syscall stop) consumes the
  /// pending interrupt (the kernel clears it on every trap), so the thread is continued
  /// and interrupted again; the child a clone event announces is held first. A thread
  /// that has not stopped by `deadline` fails the operation, naming why if /proc says.
  private func waitUntilHeld(
    _ tid: Int32, by deadline: ContinuousClock.Instant = .now + stopBound
  ) throws(ProcessError) {
    while true {
      guard let event = try nextEvent(tid, by: deadline) else {
        if TargetProcess.isInVfork(tid, of: pid) { throw .vforkInProgress(pid: pid, tid: tid) }
        throw .stopTimedOut(pid: pid, tid: tid, seconds: Self.stopBound.seconds)
      }
      switch event {
      case .gone:
        threads.removeAll { $0 == tid }
        if tid == pid { throw .processExited(pid: pid) }
        return
      case .event(Int32(SWP_PTRACE_EVENT_STOP), let signal):
        // An interrupt stop reports SIGTRAP; a group stop reports the stopping signal.
        if signal != SIGTRAP { groupStopped.insert(tid) }
        settled.insert(tid)
        return
      case .signal(let signal):
        // Held in a signal-delivery stop: the signal is passed on at resume.
        pendingSignals[tid, default: []].append(signal)
        inSignalStop.insert(tid)
        settled.insert(tid)
        return
      case .event(Int32(SWP_PTRACE_EVENT_CLONE), _):
        try adoptNewThread(announcedBy: tid, by: deadline)
        try continueAndInterrupt(tid)
      case .event, .syscallStop:
        try continueAndInterrupt(tid)
      }
    }
  }

  /// The next wait event of `tid`, or nil once `deadline` has passed. Polled rather than
  /// blocking: a main thread that exits is reported only after every other thread of
  /// its group has been reaped (by us, for threads we trace), so a blocking wait on it
  /// while its group dies would never return. A target that dies meanwhile fails at once.
  private func nextEvent(_ tid: Int32, by deadline: ContinuousClock.Instant) throws(ProcessError)
    -> WaitEvent?
  {
    var spins = 0
    var lookAgain = ContinuousClock.now + .milliseconds(5)
    while true {
      if let event = try WaitEvent.next(tid, noHang: true) { return event }
      let now = ContinuousClock.now
      if now >= lookAgain {
        if !TargetProcess.isAlive(pid: pid, startTime: startTime) { throw .processExited(pid: pid) }
        lookAgain = now + .milliseconds(5)
      }
      if now >= deadline { return nil }
      spins += 1
      if spins < 200 { sched_yield() } else { usleep(100) }
    }
  }

  /// Lets a thread out of a stop that is not a place to hold it and stops it again on
  /// its way back to user code, before it runs any: an interrupt sent to a stopped
  /// thread traps once the current stop ends (kernel/ptrace.c, PTRACE_INTERRUPT). The
  /// new stop is inside signal handling, where a resume restarts an interrupted system
  /// call as the kernel would.
  private func continueAndInterrupt(_ tid: Int32) throws(ProcessError) {
    try Ptrace.call(.interrupt, tid)
    try proceed(.cont, tid)
  }

  /// Holds the thread a clone event announces: the kernel attached it and it starts in
  /// a stop, which must be waited for before any memory is written.
  private func adoptNewThread(
    announcedBy parent: Int32, by deadline: ContinuousClock.Instant = .now + stopBound
  ) throws(ProcessError) {
    let tid = Int32(truncatingIfNeeded: try Ptrace.eventMessage(parent))
    guard tid > 0, !settled.contains(tid) else { return }
    track(tid)
    try waitUntilHeld(tid, by: deadline)
  }

  /// Restarts a held thread with `request`; it leaves any signal-delivery-stop.
  private func proceed(_ request: PtraceRequest, _ tid: Int32, signal: Int32 = 0) throws(ProcessError) {
    inSignalStop.remove(tid)
    try Ptrace.call(request, tid, 0, UInt64(signal))
  }

  /// Threads let run (still seized) while one thread is borrowed for a long remote call.
  private var released: [Int32] = []

  /// Lets every held thread but `tid` run while `tid` is borrowed for a remote call that
  /// may take long or need a lock another thread holds (dlopen: the loader and malloc
  /// locks). They stay seized, so a thread they create is attached too, and nothing is
  /// written until `holdReleasedAgain`. A target in a group stop (SIGSTOP) stays stopped.
  public func releaseOthers(except tid: Int32) throws(ProcessError) {
    try checkHeld()
    guard groupStopped.isEmpty else { return }
    releasedAt = .now
    for other in threads where other != tid {
      try proceed(.cont, other)
      released.append(other)
    }
  }

  /// Stops every released thread again, and holds every thread created meanwhile.
  public func holdReleasedAgain() throws(ProcessError) {
    try checkHeld()
    let running = released
    released = []
    for tid in running where threads.contains(tid) { try interruptAndWait(tid) }
    if let start = releasedAt { ranFor += ContinuousClock.now - start }
    releasedAt = nil
    try seizeAllThreads()
  }

  /// Set by `resume`: from then on the target is not ours to touch.
  private var resumed = false

  /// Throws unless the target is still held: its scope has not ended.
  public func checkHeld() throws(ProcessError) {
    if resumed { throw .notStopped(pid: pid) }
  }

  /// Lets every thread run again, passing on each signal that arrived while it was held,
  /// and detaches. Safe to call twice.
  func resume() {
    guard !resumed else { return }
    defer {
      resumed = true
      try? memory.close()
    }
    // A running tracee cannot be detached: stop released threads first.
    if !released.isEmpty { try? holdReleasedAgain() }
    guard !threads.isEmpty else { return }
    var running: [Int32] = []
    for tid in threads {
      var signals = pendingSignals[tid] ?? []
      // A detach passes a signal on only from a signal-delivery-stop; from any other
      // stop it is dropped. So the rest are queued again with tgkill while the thread is
      // still held, and it takes them as soon as it runs.
      let first = inSignalStop.contains(tid) && !signals.isEmpty ? signals.removeFirst() : 0
      for signal in signals { _ = swp_tgkill(pid, tid, signal) }
      if (try? Ptrace.call(.detach, tid, 0, UInt64(first))) == nil { running.append(tid) }
    }
    threads = []
    stoppedFor = ContinuousClock.now - firstStop - ranFor
    Self.letGo(running, within: .seconds(1))
  }

  /// Threads that could not be detached because they were not in a stop: dying (killed
  /// while held, so their exit must be reaped by us before their real parent can see
  /// it), or seized but not yet stopped (its interrupt is still pending). Each is waited
  /// for, without blocking, until it exits (reaped) or stops (detached); the rest are
  /// left to `releaseStrays`. Only ever touched on the tracer thread (there is one:
  /// `TracerThread.shared`; a detach from any other thread would fail).
  nonisolated(unsafe) private static var strays: [Int32] = []

  /// Whether some thread still waits to be let go (the tracer thread then polls).
  static var hasStrays: Bool { !strays.isEmpty }

  private static func letGo(_ tids: [Int32], within bound: Duration) {
    var left = tids
    let deadline = ContinuousClock.now + bound
    while !left.isEmpty {
      left = left.filter { !release($0) }
      if left.isEmpty || ContinuousClock.now >= deadline { break }
      usleep(200)
    }
    strays += left
  }

  /// Lets go of every stray thread that has exited or stopped since.
  static func releaseStrays() {
    strays = strays.filter { !release($0) }
  }

  /// Reaps `tid` if it has exited, detaches it if it has stopped; true when it is no
  /// longer ours.
  private static func release(_ tid: Int32) -> Bool {
    let event: WaitEvent?
    do {
      event = try WaitEvent.next(tid, noHang: true)
    } catch {
      return true  // not our tracee any more
    }
    guard let event else { return false }  // still running
    switch event {
    case .gone:
      return true
    case .signal(let signal):
      return (try? Ptrace.call(.detach, tid, 0, UInt64(signal))) != nil
    default:
      return (try? Ptrace.call(.detach, tid)) != nil
    }
  }

  // MARK: Memory

  /// Reads target memory through /proc/PID/mem.
  public func read(at address: UInt64, count: Int) throws(ProcessError) -> [UInt8] {
    try checkHeld()
    var bytes = [UInt8](repeating: 0, count: count)
    let n: Int
    do {
      n = try bytes.withUnsafeMutableBytes { buffer in
        try memory.read(fromAbsoluteOffset: Int64(bitPattern: address), into: buffer)
      }
    } catch let errno as Errno {
      throw .memory(address: address, count: count, write: false, errno: errno)
    } catch {
      throw .memory(address: address, count: count, write: false, errno: nil)
    }
    guard n == count else { throw .memory(address: address, count: count, write: false, errno: nil) }
    return bytes
  }

  /// Writes target memory through /proc/PID/mem, which (unlike process_vm_writev) may
  /// write read-only text pages.
  public func write(_ bytes: [UInt8], at address: UInt64) throws(ProcessError) {
    try checkHeld()
    let n: Int
    do {
      n = try bytes.withUnsafeBytes { buffer in
        try memory.write(toAbsoluteOffset: Int64(bitPattern: address), buffer)
      }
    } catch let errno as Errno {
      throw .memory(address: address, count: bytes.count, write: true, errno: errno)
    } catch {
      throw .memory(address: address, count: bytes.count, write: true, errno: nil)
    }
    guard n == bytes.count else {
      throw .memory(address: address, count: bytes.count, write: true, errno: nil)
    }
  }

  /// The registers of held thread `tid`.
  public func registers(of tid: Int32) throws(ProcessError) -> Registers {
    try checkHeld()
    return Registers(try Ptrace.getRegisters(tid))
  }

  /// Makes held thread `tid` resume at `address`, every other register as it is.
  public func setInstructionPointer(_ address: UInt64, of tid: Int32) throws(ProcessError) {
    try checkHeld()
    var regs = try Ptrace.getRegisters(tid)
    regs.rip = address
    try Ptrace.setRegisters(tid, regs)
  }

  /// Registers that code swpatch writes into a target pushes on entry and pops on exit
  /// (a transition's gates and stubs).
  public enum PushedRegister: Sendable { case rax, rcx }

  /// Makes held thread `tid` do what the rest of the swpatch code it is stopped in would
  /// do: pop `popped` off its stack, in order, then jump to `address`. How a thread is
  /// moved out of a gate or stub that is about to go away.
  public func finishPops(_ popped: [PushedRegister], thenJumpTo address: UInt64, of tid: Int32)
    throws(ProcessError)
  {
    try checkHeld()
    var regs = try Ptrace.getRegisters(tid)
    for register in popped {
      let bytes = try read(at: regs.rsp, count: 8)
      let value = bytes.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
      switch register {
      case .rax: regs.rax = value
      case .rcx: regs.rcx = value
      }
      regs.rsp += 8
    }
    regs.rip = address
    try Ptrace.setRegisters(tid, regs)
  }

  // MARK: Threads inside rewritten bytes

  /// The held threads that would execute part of `bytes` other than their first byte
  /// once resumed, with their instruction pointers. A thread interrupted in a
  /// restartable system call counts when the 2-byte `syscall` before its `rip` lies in
  /// `bytes`: the kernel moves it back onto that instruction as it resumes.
  public func threadsInside(_ bytes: [Range<UInt64>]) throws(ProcessError) -> [(tid: Int32, rip: UInt64)] {
    try checkHeld()
    var inside: [(tid: Int32, rip: UInt64)] = []
    for tid in threads {
      let regs = try Ptrace.getRegisters(tid)
      if bytes.contains(where: { Self.executes(inside: $0, regs) }) { inside.append((tid, regs.rip)) }
    }
    return inside
  }

  /// Whether a thread resumed with `regs` executes bytes of `range` past its first.
  static func executes(inside range: Range<UInt64>, _ regs: user_regs_struct) -> Bool {
    if RestartErrno.restarts(regs) && regs.rip >= 2 && (regs.rip - 2..<regs.rip).overlaps(range) {
      return true
    }
    return range.contains(regs.rip) && regs.rip != range.lowerBound
  }

  /// Moves every held thread that would execute inside one of `bytes` (see
  /// `threadsInside`) out of them: the thread runs alone, every other thread still held,
  /// for a moment that doubles on each of at most `attempts` tries (50 µs up to about
  /// 100 ms), and is interrupted again. Returns the threads still inside.
  ///
  /// The thread runs its own code, so every instant is safe: if swpatch dies meanwhile,
  /// the thread is simply running (a pending interrupt dies with its tracer).
  /// Single-stepping instead would leave the trap flag set for a moment, and a thread
  /// that traps with no tracer is killed by SIGTRAP.
  public func runThreadsOut(
    of bytes: [Range<UInt64>], attempts: Int = 12
  ) throws(ProcessError) -> [(tid: Int32, rip: UInt64)] {
    try checkHeld()
    func position(_ tid: Int32) throws(ProcessError) -> UInt64? {
      guard threads.contains(tid) else { return nil }  // exited while it ran
      let regs = try Ptrace.getRegisters(tid)
      return bytes.contains { Self.executes(inside: $0, regs) } ? regs.rip : nil
    }
    var stuck: [(tid: Int32, rip: UInt64)] = []
    for tid in threads {
      var attempt = 0
      while let rip = try position(tid) {
        guard attempt < attempts else {
          stuck.append((tid, rip))
          break
        }
        try proceed(.cont, tid)
        usleep(UInt32(50 << attempt))
        try interruptAndWait(tid)
        attempt += 1
      }
    }
    return stuck
  }

  // MARK: Remote syscalls and calls

  /// Address of the `HijackStub` in the target, once a trampoline page holds one. Remote
  /// calls need it; remote system calls use it when they can. Private: a wrong address
  /// here would send a borrowed thread into whatever bytes are there.
  private var hijackStub: UInt64?

  /// Whether remote calls have a hijack stub to return to.
  public var hasHijackStub: Bool { hijackStub != nil }

  /// Makes the hijack stub at `address` the one remote calls and system calls return
  /// to, after checking that the bytes there are the stub.
  public func useStub(at address: UInt64) throws(ProcessError) {
    guard try read(at: address, count: HijackStub.bytes.count) == HijackStub.bytes else {
      throw .notHijackStub(address: address)
    }
    hijackStub = address
  }

  /// Stops using the stub if it lies in `range`: memory about to be unmapped. (munmap
  /// must not run from the stub of the page it unmaps: were swpatch killed at that
  /// call's exit stop, the thread would resume into an unmapped page.)
  public func forgetStub(in range: Range<UInt64>) {
    if let stub = hijackStub, range.contains(stub) { hijackStub = nil }
  }

  /// Runs one system call in thread `tid` of the target and returns its raw result
  /// (negative errno on failure). Every register is restored afterwards.
  ///
  /// The thread runs the hijack stub's `syscall` with its registers saved below its red
  /// zone, so it restores itself if swpatch dies meanwhile. Before a trampoline page
  /// holds a stub (the mmap of the first one), a copy of the stub is written for the
  /// call into spare bytes after an executable segment, and the bytes are put back
  /// after. Only when no object has such room does it run an existing `syscall`
  /// instruction of the target, and a swpatch killed in those microseconds would leave
  /// the thread with borrowed registers. It is run with PTRACE_SYSCALL to the
  /// syscall-exit stop.
  func syscall(
    _ number: Int, _ args: [UInt64] = [], in tid: Int32? = nil
  ) throws(ProcessError) -> Int64 {
    try syscall(number, data: [], args: { _ in args }, in: tid)
  }

  /// Like `syscall(_:_:in:)`, with `data` first copied onto the thread's stack below
  /// the red zone (memory the thread is not using, above the stub's restore block);
  /// `args` receives its address.
  func syscall(
    _ number: Int, data: [UInt8], args: (UInt64) -> [UInt64], in tid: Int32? = nil
  ) throws(ProcessError) -> Int64 {
    try checkHeld()
    let tid = tid ?? mainThread
    let saved = try Ptrace.getRegisters(tid)
    var regs = saved
    var xsave: [UInt8]? = nil
    let dataAddress = (saved.rsp &- 136 &- UInt64(data.count)) & ~15
    if !data.isEmpty { try write(data, at: dataAddress) }
    let borrowed = hijackStub == nil ? try borrowSpareCode() : nil
    // Put back only once the thread has its own registers again (defer runs last).
    defer { if let borrowed { try? write(borrowed.original, at: borrowed.address) } }
    if let stub = hijackStub ?? borrowed?.address {
      let image = try Ptrace.getExtendedState(tid)
      let top = data.isEmpty ? saved.rsp &- 136 : dataAddress
      regs.rsp = try writeRestoreBlock(saved: saved, xsave: image, below: top)
      regs.rip = stub + HijackStub.syscallEntry
      xsave = image
    } else {
      regs.rip = try findSyscallInstruction()
    }
    regs.rax = UInt64(number)
    // orig_rax = -1: otherwise the kernel's restart logic rewinds rip by 2 when the
    // thread was interrupted inside a restartable syscall.
    regs.orig_rax = UInt64.max
    let a = args(dataAddress) + [UInt64](repeating: 0, count: 6)
    (regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8, regs.r9) = (a[0], a[1], a[2], a[3], a[4], a[5])
    try Ptrace.setRegisters(tid, regs)
    let result: user_regs_struct
    do {
      for _ in 0..<2 {  // syscall-enter stop, then syscall-exit stop
        try proceed(.syscall, tid)
        try waitForSyscallStop(tid)
      }
      result = try Ptrace.getRegisters(tid)
    } catch {
      try? Ptrace.setRegisters(tid, saved)
      throw error
    }
    try putBack(tid, saved: saved, xsave: xsave)
    return Int64(bitPattern: result.rax)
  }

  /// Writes a copy of the hijack stub into spare executable bytes; returns where, and
  /// what was there before.
  private func borrowSpareCode() throws(ProcessError) -> (address: UInt64, original: [UInt8])? {
    guard let spot = try spareCodeBytes(count: HijackStub.bytes.count) else { return nil }
    let original = try read(at: spot, count: HijackStub.bytes.count)
    try write(HijackStub.bytes, at: spot)
    return (spot, original)
  }

  /// Gives a borrowed thread stopped at a syscall-exit stop its own state back, and
  /// parks it in an interrupt stop: there a resume restarts the system call it was
  /// interrupted in, which a resume from a syscall-exit stop would not (it would return
  /// -ERESTART* to the program). The extended state goes first: until the general
  /// registers are back, a thread let go runs the stub, which restores both.
  private func putBack(_ tid: Int32, saved: user_regs_struct, xsave: [UInt8]?) throws(ProcessError) {
    if let xsave { try Ptrace.setExtendedState(tid, xsave) }
    try Ptrace.setRegisters(tid, saved)
    try continueAndInterrupt(tid)
    try waitUntilHeld(tid)
  }

  /// Writes the stub's restore block for `saved` below `top` and returns its address.
  private func writeRestoreBlock(
    saved: user_regs_struct, xsave: [UInt8], below top: UInt64
  ) throws(ProcessError) -> UInt64 {
    let block = HijackStub.block(saved: saved, xsave: xsave, below: top)
    try write(block.bytes, at: block.address)
    try write(withUnsafeBytes(of: block.resume.littleEndian, Array.init), at: saved.rsp &- 136)
    return block.address
  }

  private func waitForSyscallStop(_ tid: Int32) throws(ProcessError) {
    try driveBorrowed(
      tid, by: .now + .seconds(5),
      timedOut: { () throws(ProcessError) in
        .unexpectedStop(tid: tid, detail: "no system call stop within 5 s")
      },
      until: { event throws(ProcessError) in event == .syscallStop ? () : nil })
  }

  /// Waits for the events of a borrowed thread that runs under PTRACE_SYSCALL until
  /// `stop` returns a value for one. Every other event lets it go on: a signal is kept
  /// for the resume, a thread it creates is held, and its death fails the operation.
  /// At `deadline`, `timedOut` gives the error to throw (after stopping the thread, if
  /// it must).
  private func driveBorrowed<T>(
    _ tid: Int32, by deadline: ContinuousClock.Instant,
    timedOut: () throws(ProcessError) -> ProcessError,
    until stop: (WaitEvent) throws(ProcessError) -> T?
  ) throws(ProcessError) -> T {
    while true {
      guard let event = try nextEvent(tid, by: deadline) else { throw try timedOut() }
      if let value = try stop(event) { return value }
      switch event {
      case .gone:
        throw .processExited(pid: pid)
      case .signal(let signal):
        pendingSignals[tid, default: []].append(signal)
      case .event(Int32(SWP_PTRACE_EVENT_CLONE), _):
        try adoptNewThread(announcedBy: tid)
      case .event, .syscallStop:
        break
      }
      try proceed(.syscall, tid)
    }
  }

  /// Calls `function(args...)` in thread `tid` and returns its `rax`.
  ///
  /// `data` is copied onto the thread's stack below the red zone; `dataAddress` in the
  /// body's result says where. The call returns into the `HijackStub` at `stub`, with
  /// the thread's registers saved below the data: if swpatch dies at any instant, the
  /// thread finishes the call, restores itself and carries on. Alive, swpatch drives it
  /// with PTRACE_SYSCALL until the stub's marker system call, and restores it itself.
  /// If it does not come back within `timeout` the thread is interrupted and restored.
  func call(
    _ function: UInt64, name: String, args: (UInt64) -> [UInt64], data: [UInt8] = [],
    timeout: Duration, in tid: Int32? = nil
  ) throws(ProcessError) -> UInt64 {
    try checkHeld()
    guard let stub = hijackStub else { throw .noHijackStub(pid: pid) }
    let tid = tid ?? mainThread
    let saved = try Ptrace.getRegisters(tid)
    let savedExtended = try Ptrace.getExtendedState(tid)
    func restore(interrupted: Bool = false) {
      var regs = saved
      // A thread stopped in a call that restarts through restart_syscall (nanosleep,
      // poll, futex with a timeout: rax = -ERESTART_RESTARTBLOCK) resumes from its
      // per-thread restart block. If our call was itself interrupted inside a blocking
      // syscall, that block now describes *our* call; so re-issue the thread's own
      // syscall from scratch instead (same registers, rip back onto `syscall`).
      if interrupted && Int64(bitPattern: saved.rax) == RestartErrno.restartRestartBlock
        && Int64(bitPattern: saved.orig_rax) >= 0
      {
        regs.rax = saved.orig_rax
        regs.rip = saved.rip - 2
        regs.orig_rax = UInt64.max
      }
      try? Ptrace.setExtendedState(tid, savedExtended)
      try? Ptrace.setRegisters(tid, regs)
    }
    let dataAddress = (saved.rsp &- 136 &- UInt64(data.count)) & ~15
    if !data.isEmpty { try write(data, at: dataAddress) }
    let block = try writeRestoreBlock(saved: saved, xsave: savedExtended, below: dataAddress)
    // The block is 64-byte aligned, so at entry rsp + 8 is 16-byte aligned, as after a `call`.
    let sp = block - 8
    try write(withUnsafeBytes(of: (stub + HijackStub.callReturn).littleEndian, Array.init), at: sp)
    var regs = saved
    regs.rsp = sp
    regs.rip = function
    regs.rax = 0
    regs.orig_rax = UInt64.max
    let a = args(dataAddress) + [UInt64](repeating: 0, count: 6)
    (regs.rdi, regs.rsi, regs.rdx, regs.rcx, regs.r8, regs.r9) = (a[0], a[1], a[2], a[3], a[4], a[5])
    try Ptrace.setRegisters(tid, regs)
    let result: UInt64
    do {
      try proceed(.syscall, tid)
      result = try waitForReturn(tid, stub: stub, name: name, timeout: timeout)
      try proceed(.syscall, tid)  // through the marker's exit stop
      try waitForSyscallStop(tid)
    } catch {
      restore(interrupted: true)
      throw error
    }
    try putBack(tid, saved: saved, xsave: savedExtended)
    return result
  }

  /// Waits until the borrowed thread reaches the stub's marker system call and returns
  /// the call's result (which the stub copied to rdi). Other system calls it makes meanwhile
  /// are let through.
  private func waitForReturn(
    _ tid: Int32, stub: UInt64, name: String, timeout: Duration
  ) throws(ProcessError) -> UInt64 {
    let faults = [SIGTRAP, SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT]
    return try driveBorrowed(
      tid, by: .now + timeout,
      timedOut: { () throws(ProcessError) in
        try interruptAndWait(tid)
        return .remoteCallTimedOut(function: name, tid: tid, seconds: timeout.seconds)
      },
      until: { event throws(ProcessError) -> UInt64? in
        switch event {
        case .syscallStop:
          let regs = try Ptrace.getRegisters(tid)
          let returned = regs.rip == stub + HijackStub.callReturnMarker && regs.orig_rax == HijackStub.getpid
          return returned ? regs.rdi : nil
        case .signal(let signal) where faults.contains(signal):
          let regs = try Ptrace.getRegisters(tid)
          throw .remoteCallFaulted(function: name, tid: tid, signal: signal, rip: regs.rip)
        default:
          return nil
        }
      })
  }

  /// Stops a running borrowed thread again.
  private func interruptAndWait(_ tid: Int32) throws(ProcessError) {
    do {
      try Ptrace.call(.interrupt, tid)
    } catch .ptrace(_, _, let errno) where errno == .noSuchProcess {
      // It is exiting: the wait below reaps it.
    }
    try waitUntilHeld(tid)
  }

  /// Any `syscall` instruction (0f 05) in an executable mapping; the vdso and libc
  /// always have one.
  private func findSyscallInstruction() throws(ProcessError) -> UInt64 {
    if let found = syscallInstruction { return found }
    for mapping in try ProcessMaps.read(pid: pid) where mapping.isExecutable {
      let count = Int(min(mapping.end - mapping.start, 1 << 20))
      guard let bytes = try? read(at: mapping.start, count: count) else { continue }
      for i in 0..<(bytes.count - 1) where bytes[i] == 0x0f && bytes[i + 1] == 0x05 {
        syscallInstruction = mapping.start + UInt64(i)
        return mapping.start + UInt64(i)
      }
    }
    throw .noSyscallInstruction(pid: pid)
  }
}

extension Duration {
  /// The duration in seconds, for messages.
  public var seconds: Double {
    Double(components.seconds) + Double(components.attoseconds) / 1e18
  }
  /// The duration in whole microseconds, for reports.
  public var microseconds: Int64 {
    components.seconds * 1_000_000 + components.attoseconds / 1_000_000_000_000
  }
}
