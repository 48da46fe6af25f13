import FoundationEssentials
import Glibc
import SwpatchBase
import SwpatchProcess
import SwpatchProtocol
import SwpatchRegistry
import SwpatchSymbols
import SwpatchX86

// The per-thread transition of `--consistency stack` (docs/design.md, "The per-thread
// transition"): threads inside what an operation switches away from keep the old
// versions until their outermost such frame returns, and switch there on their own.

/// Where an unswitched thread is caught: the return address of its outermost frame in
/// guarded code, which is redirected to a stub of the transition page.
struct CatchPoint: Equatable {
  var tid: Int32
  /// The thread's TLS pointer (`fs_base`, and `fs:0` in the thread): how gates know it.
  var tls: UInt64
  /// The stack slot holding the return address (the frame's CFA minus 8).
  var returnSlot: UInt64
  var returnAddress: UInt64
  /// For messages: the guarded code and the frame.
  var function: String
  var frame: StackFrame
}

/// A cell an operation changes, and where its calls go for unswitched threads (`old`)
/// and for the others (`new`).
struct ChangedCell: Equatable, Codable {
  var cell: UInt64
  var old: UInt64
  var new: UInt64
}

extension StackCheck {
  /// Every thread inside guarded code, each as the point where it will be caught; or
  /// `StackBlocked` naming the first thread that cannot be caught (then the operation
  /// waits, as before). Runs in the stop, on the tracer thread.
  func catchPoints(in target: StoppedTarget, allowed: Bool) throws -> [CatchPoint] {
    guard !guarded.isEmpty else { return [] }
    let stacks = try StackUnwinder.stacks(of: target)
    var points: [CatchPoint] = []
    var firstBlocker: BlockingThread?
    for stack in stacks {
      guard let (outermost, code) = outermostGuarded(stack) else { continue }
      let blocker = BlockingThread.inside(tid: stack.tid, function: code.label, frame: outermost)
      guard allowed, let point = try catchPoint(stack, outermost: outermost, code: code, in: target) else {
        firstBlocker = firstBlocker ?? blocker
        continue
      }
      points.append(point)
    }
    if let firstBlocker { throw StackBlocked(blocker: firstBlocker) }
    if let unreadable = unreadableStack(stacks) { throw StackBlocked(blocker: unreadable) }
    let shared = Dictionary(grouping: try target.threads.map { try target.registers(of: $0).fsBase }) { $0 }
    // Two threads with one TLS pointer (raw clone without CLONE_SETTLS) cannot be told
    // apart by a gate: wait for them instead.
    if let point = points.first(where: { (shared[$0.tls]?.count ?? 0) > 1 }) {
      throw StackBlocked(blocker: .inside(tid: point.tid, function: point.function, frame: point.frame))
    }
    return points
  }

  /// The catch point of a thread whose outermost guarded frame is `outermost`, or nil
  /// when it cannot be caught safely: no caller frame with a known stack pointer, a
  /// return address that does not read back, a TLS pointer glibc does not keep at `fs:0`.
  private func catchPoint(
    _ stack: ThreadStack, outermost: StackFrame, code: GuardedCode, in target: StoppedTarget
  ) throws -> CatchPoint? {
    guard outermost.index + 1 < stack.frames.count else { return nil }
    let caller = stack.frames[outermost.index + 1]
    guard !caller.isActivation, let sp = caller.stackPointer, sp >= 8 else { return nil }
    let slot = sp - 8
    guard (try? target.read(at: slot, count: 8)).map(TrampolineSlot.target(ofCell:)) == caller.pc else {
      return nil
    }
    let tls = try target.registers(of: stack.tid).fsBase
    guard tls != 0, tls & 1 == 0,
      (try? target.read(at: tls, count: 8)).map(TrampolineSlot.target(ofCell:)) == tls
    else {
      return nil
    }
    return CatchPoint(
      tid: stack.tid, tls: tls, returnSlot: slot, returnAddress: caller.pc, function: code.label,
      frame: outermost)
  }

  /// The frame of `stack` nearest its bottom that is inside guarded code, with that code.
  private func outermostGuarded(_ stack: ThreadStack) -> (StackFrame, GuardedCode)? {
    stack.frames.last { frame in guarded.contains { $0.range.contains(frame.address) } }.map { frame in
      (frame, guarded.first { $0.range.contains(frame.address) }!)
    }
  }

  /// Whether a thread's stack shows no guarded frame at all (after it left its frame by
  /// `longjmp`), else its new catch point.
  func recatch(_ tid: Int32, in target: StoppedTarget) throws -> CatchPoint?? {
    let stacks = try StackUnwinder.stacks(of: target)
    guard let stack = stacks.first(where: { $0.tid == tid }) else { return .some(nil) }
    guard let (outermost, code) = outermostGuarded(stack) else { return .some(nil) }
    guard let point = try catchPoint(stack, outermost: outermost, code: code, in: target) else { return nil }
    return .some(point)
  }
}

/// An operation whose plan is carried out and whose cells go through gates, waiting for
/// its unswitched threads to return; made in the first stop, finished (or reversed) by
/// `Engine.finish(_:)`.
final class PendingTransition {
  let page: TransitionPage
  var points: [CatchPoint]
  let cells: [ChangedCell]
  /// Hooks the plan removes: their entry jumps stay until the end, cells gated from the
  /// replacement to the relocated prologue (the original).
  let removals: [(oldAddr: UInt64, install: HookInstall)]
  let plan: Plan
  let next: TargetState
  /// Every write of the first stop, oldest first (put back if the transition is reversed).
  let writes: [UndoJournal.Entry]
  let journal: UndoJournal?
  let objectBytes: [UInt64: [UInt8]]
  /// What the first stop loaded and mapped: released again by a reversal when no thread
  /// is in it.
  var acquired = Transaction.Acquired()

  init(
    page: TransitionPage, points: [CatchPoint], cells: [ChangedCell],
    removals: [(oldAddr: UInt64, install: HookInstall)], plan: Plan, next: TargetState,
    writes: [UndoJournal.Entry], journal: UndoJournal?, objectBytes: [UInt64: [UInt8]]
  ) {
    self.page = page
    self.points = points
    self.cells = cells
    self.removals = removals
    self.plan = plan
    self.next = next
    self.writes = writes
    self.journal = journal
    self.objectBytes = objectBytes
  }
}

extension Transaction {
  /// In the first stop, after the plan was carried out with its removals deferred:
  /// maps the transition page, points every changed cell at its gate and every caught
  /// thread's return address at its stub. Throws `StackBlocked` (rolled back with the
  /// rest) when an old version is not reachable any more, or the page is too small.
  /// `journaling` gets the page before any cell or return address is redirected, to
  /// record what another daemon needs to finish the transition.
  func beginTransition(
    _ points: [CatchPoint], cells: [ChangedCell], journaling: (TransitionPage) throws -> Void = { _ in }
  ) throws -> TransitionPage {
    let routed = cells.filter { $0.old != $0.new }
    func blocked() -> StackBlocked {
      let point = points[0]
      return StackBlocked(blocker: .inside(tid: point.tid, function: point.function, frame: point.frame))
    }
    guard !routed.contains(where: { $0.old == 0 }) else { throw blocked() }
    guard let base = try target.mmap(at: nil, length: TransitionPage.size, executable: true) else {
      throw blocked()
    }
    transitionPages.append(base)
    let table = try target.mapData(length: TransitionPage.size)
    transitionPages.append(table)
    guard
      let page = TransitionPage(
        base: base, table: table, threads: points.map(\.tls),
        routes: routed.map { TransitionPage.Route(old: $0.old, new: $0.new) },
        returns: points.map(\.returnAddress))
    else { throw blocked() }
    try journaling(page)
    try target.write(page.tableBytes, at: table)
    try target.write(page.bytes, at: base)
    for (i, cell) in routed.enumerated() {
      try write(TrampolineSlot.cell(target: page.gateAddress(i)), at: cell.cell)
    }
    // Stack slots are not journaled: once the frame returns, the slot is the thread's
    // stack again, and putting back a return address there would corrupt it.
    for (i, point) in points.enumerated() {
      try target.write(TrampolineSlot.cell(target: page.stubAddress(i)), at: point.returnSlot)
      redirected.append((point.returnSlot, point.returnAddress))
    }
    return page
  }
}

extension Engine {
  /// Waits, with the target running, for every unswitched thread to return through its
  /// stub (polling the table through /proc/PID/mem: 1 ms doubling to 20 ms; every
  /// 100 ms a short stop catches again a thread that left its frame another way), then
  /// makes the new versions direct in a last stop and commits. A thread still inside at
  /// `--retry-for` reverses the operation. Returns the longest stop and how long the
  /// transition took.
  func finish(
    _ pending: PendingTransition, check: StackCheck?, pid: Int32, session: RegistryStore.Session,
    options: OperationOptions
  ) throws -> (longestStop: Duration, took: Duration) {
    let start = ContinuousClock.now
    let deadline = start + options.retryBound
    let process = try TargetProcess.inspect(pid)
    var longest = Duration.zero
    var pause = Duration.milliseconds(1)
    var lastLook = start
    var told = false
    var reversed = false
    do {
      try waitForSwitches()
    } catch {
      // Whatever went wrong while the target ran with gates in place, the operation is
      // undone rather than left half-switched (unless it already was).
      if !reversed, !(error is ProcessError) {
        try? reverse(pending, waiting: unswitched(pending, process: process), pid: pid)
      }
      throw error
    }
    func waitForSwitches() throws {
      while true {
        let waiting = unswitched(pending, process: process)
        if waiting.isEmpty { break }
        let now = ContinuousClock.now
        if !told {
          told = true
          let point = pending.points[waiting[0]]
          let blocker = BlockingThread.inside(tid: point.tid, function: point.function, frame: point.frame)
          progress?(
            "waiting: \(blocker); it switches when that frame returns (up to \(formatSeconds(options.retryBound.seconds)) s)"
          )
        }
        if now >= deadline {
          let point = pending.points[waiting[0]]
          reversed = true
          try reverse(pending, waiting: waiting, pid: pid)
          throw PatchError.transitionTimedOut(
            blocker: BlockingThread.inside(tid: point.tid, function: point.function, frame: point.frame)
              .description, waited: options.retryBound.seconds)
        }
        // A frame gone without its stub (`longjmp`) shows as a slot that no longer holds
        // the stub, read without stopping anything; a stop looks at such threads at
        // once, and at all of them once a second (a slot not reused yet). Stopping every
        // thread more often would only hold up the threads being waited for.
        let overwritten = waiting.contains { i in
          let slot = process.peek(at: pending.points[i].returnSlot, count: 8)
          return slot.count == 8 && TrampolineSlot.target(ofCell: slot) != pending.page.stubAddress(i)
        }
        if let check, overwritten || now - lastLook >= .seconds(1) {
          let (_, held) = try tracer.withStoppedMeasured(pid) { target in
            try self.catchAgain(pending, waiting: waiting, check: check, in: target)
          }
          longest = max(longest, held)
          lastLook = .now
          continue
        }
        OSThread.sleep(min(pause, deadline - now))
        pause = min(pause * 2, .milliseconds(20))
      }
    }
    let (_, held) = try tracer.withStoppedMeasured(pid) { target in
      try self.complete(pending, session: session, options: options, in: target)
    }
    return (max(longest, held), ContinuousClock.now - start)
  }

  /// The indices of caught threads that have not switched and are still alive.
  private func unswitched(_ pending: PendingTransition, process: TargetProcess) -> [Int] {
    let alive = Set(TargetProcess.threadIDs(of: process.pid))
    return pending.points.indices.filter { i in
      alive.contains(pending.points[i].tid)
        && !TransitionPage.isSwitched(process.peek(at: pending.page.tableEntry(i), count: 1))
    }
  }

  /// A thread whose redirected frame is gone left it without returning (`longjmp`): with
  /// no guarded frame left it is switched here, with one (it went on calling the old
  /// versions, as an unswitched thread does) its new outermost such frame is redirected
  /// to the same stub.
  private func catchAgain(
    _ pending: PendingTransition, waiting: [Int], check: StackCheck, in target: StoppedTarget
  ) throws {
    for i in waiting where target.threads.contains(pending.points[i].tid) {
      let point = pending.points[i]
      let registers = try target.registers(of: point.tid)
      guard !pending.page.codeRange.contains(registers.rip) else { continue }
      // The frame is gone when the stack is above its slot, or when the slot no longer
      // holds the stub: a later call at the same depth pushed its own return address.
      let slot = TrampolineSlot.target(ofCell: try target.read(at: point.returnSlot, count: 8))
      guard registers.rsp > point.returnSlot || slot != pending.page.stubAddress(i) else { continue }
      switch try check.recatch(point.tid, in: target) {
      case .some(nil):
        try target.write([1], at: pending.page.tableEntry(i))
      case .some(let again?):
        try target.write(TrampolineSlot.cell(target: again.returnAddress), at: pending.page.returnCell(i))
        try target.write(TrampolineSlot.cell(target: pending.page.stubAddress(i)), at: again.returnSlot)
        pending.points[i] = CatchPoint(
          tid: point.tid, tls: point.tls, returnSlot: again.returnSlot, returnAddress: again.returnAddress,
          function: again.function, frame: again.frame)
      case .none:
        continue
      }
    }
  }

  /// The last stop: every gated cell gets its new value, the removals that waited are
  /// carried out, the registry is committed, and the transition page goes if no thread
  /// is in it. A failure puts back every write of the operation.
  private func complete(
    _ pending: PendingTransition, session: RegistryStore.Session, options: OperationOptions,
    in target: StoppedTarget
  ) throws {
    let transaction = Transaction(target: target, state: pending.next, callTimeout: options.callTimeout)
    transaction.journal = pending.journal
    do {
      // A thread stopped inside a gate or stub would jump where the gate's own cells
      // say, possibly into a prologue a removal below frees (measured: SIGTRAP under
      // longjmp-heavy load): it is sent on first, as the code would have sent it.
      try moveOutOfTransitionCode(pending, in: target)
      for (i, cell) in pending.cells.enumerated() {
        guard
          TrampolineSlot.target(ofCell: try target.read(at: cell.cell, count: 8))
            == pending.page.gateAddress(i)
        else {
          throw PatchError.drift(oldAddr: cell.cell, detail: "a cell does not hold its transition gate")
        }
        try transaction.write(TrampolineSlot.cell(target: cell.new), at: cell.cell)
      }
      for removal in pending.removals {
        try transaction.removeHook(
          removal.oldAddr, removal.install, file: pending.objectBytes[removal.oldAddr])
      }
      try session.save(pending.next)
    } catch {
      try? UndoJournal.putBack(pending.writes + transaction.writes, into: target)
      pending.journal?.discard()
      throw error
    }
    pending.journal?.discard()
    Transaction.useStub(in: pending.next.pages, of: target)
    try? target.munmap(pending.page.base, length: TransitionPage.size)
    try? target.munmap(pending.page.table, length: TransitionPage.size)
  }

  /// Undoes a transition that did not finish: each return address still redirected is
  /// put back, then every write of the operation (not under a thread). What the first
  /// stop loaded and mapped goes too, unless a thread is running in it or will return
  /// into it (a switched thread may be in the new version's code).
  private func reverse(_ pending: PendingTransition, waiting: [Int], pid: Int32) throws {
    try tracer.withStopped(pid) { target in
      try self.moveOutOfTransitionCode(pending, in: target)
      try self.undo(pending, waiting: waiting, in: target)
    }
  }

  /// Sends every thread stopped inside the transition's gates and stubs on to where
  /// that code would send it (a gate: the old version for an unswitched thread, else
  /// the new; a stub: its table store, then the real return address), so that the code
  /// can go.
  func moveOutOfTransitionCode(_ pending: PendingTransition, in target: StoppedTarget) throws {
    let page = pending.page
    for tid in target.threads {
      let registers = try target.registers(of: tid)
      guard page.codeRange.contains(registers.rip) else { continue }
      guard let position = page.position(of: registers.rip) else {
        throw PatchError.drift(
          oldAddr: registers.rip,
          detail: "thread \(tid) is inside the transition page, between its instructions")
      }
      switch position {
      case .gate(let route, let pushed, let toOld):
        let old = try toOld ?? isUnswitched(registers.fsBase, pending, in: target)
        let pops: [StoppedTarget.PushedRegister] = pushed == 2 ? [.rcx, .rax] : pushed == 1 ? [.rax] : []
        let destination = old ? page.routes[route].old : page.routes[route].new
        try target.finishPops(pops, thenJumpTo: destination, of: tid)
      case .stub(let index, let rcxPushed, let switched):
        if !switched { try target.write([1], at: page.tableEntry(index)) }
        try target.finishPops(
          rcxPushed ? [.rcx] : [], thenJumpTo: pending.points[index].returnAddress, of: tid)
      }
    }
  }

  /// Whether the thread with TLS pointer `tls` is listed in the table and not switched.
  private func isUnswitched(_ tls: UInt64, _ pending: PendingTransition, in target: StoppedTarget) throws
    -> Bool
  {
    guard let index = pending.page.threads.firstIndex(of: tls) else { return false }
    return !TransitionPage.isSwitched(try target.read(at: pending.page.tableEntry(index), count: 1))
  }

  private func undo(_ pending: PendingTransition, waiting: [Int], in target: StoppedTarget) throws {
    for i in waiting where target.threads.contains(pending.points[i].tid) {
      let point = pending.points[i]
      let rsp = try target.registers(of: point.tid).rsp
      let slot = TrampolineSlot.target(ofCell: try target.read(at: point.returnSlot, count: 8))
      if rsp <= point.returnSlot, slot == pending.page.stubAddress(i) {
        try target.write(TrampolineSlot.cell(target: point.returnAddress), at: point.returnSlot)
      }
    }
    try UndoJournal.putBack(pending.writes, into: target)
    pending.journal?.discard()
    let transition = [pending.page.base, pending.page.table].map { $0..<$0 + TransitionPage.size }
    try Transaction.release(pending.acquired, extra: transition, knownPages: pending.next.pages, in: target)
  }
}

extension Transaction {
  /// A library this transaction loaded and the trampoline pages it mapped.
  struct Acquired {
    var library: (handle: UInt64, dlclose: UInt64?, memfd: Int32, name: String)?
    var pages: [TrampolinePage] = []
  }

  var acquired: Acquired {
    Acquired(
      library: loadedHandle.map { ($0.handle, $0.dlclose, $0.memfd, $0.name) }, pages: newPages)
  }

  /// Unloads the library and unmaps the pages (and `extra` ranges) of `acquired`, after
  /// threads have run since they were made: only if no thread executes in any of them
  /// and no unwound frame returns into them; otherwise all stay, unused.
  static func release(
    _ acquired: Acquired, extra: [Range<UInt64>], knownPages: [TrampolinePage], in target: StoppedTarget
  ) throws {
    var ranges = extra + acquired.pages.map { $0.base..<$0.base + $0.size }
    if let library = acquired.library {
      ranges += try target.mappings().filter { $0.path.contains("memfd:" + library.name) }.map {
        $0.start..<$0.end
      }
    }
    let stacks = try StackUnwinder.stacks(of: target)
    let pcs =
      try target.threads.map { try target.registers(of: $0).rip } + stacks.flatMap { $0.frames.map(\.pc) }
    guard !pcs.contains(where: { pc in ranges.contains { $0.contains(pc) } }) else { return }
    useStub(in: knownPages + acquired.pages, of: target)
    if let library = acquired.library {
      if let dlclose = library.dlclose {
        try? target.dlclose(dlclose, handle: library.handle, timeout: .seconds(5))
      }
      try? target.close(fd: library.memfd)
    }
    for page in acquired.pages {
      target.forgetStub(in: page.base..<page.base + page.size)
      try? target.munmap(page.base, length: page.size)
    }
    for range in extra { try? target.munmap(range.lowerBound, length: UInt64(range.count)) }
  }
}

extension Transaction {
  /// Lets remote system calls of a later stop return to the hijack stub of one of
  /// `pages` (a new stop knows none), so that swpatch dying mid-call leaves the thread
  /// to restore itself.
  static func useStub(in pages: [TrampolinePage], of target: StoppedTarget) {
    for page in pages where (try? target.useStub(at: page.base + TrampolinePageLayout.stubOffset)) != nil {
      return
    }
  }
}
