import FoundationEssentials
import Glibc
import SwpatchProcess
import SwpatchProtocol
import SwpatchRegistry
import SwpatchSymbols
import SwpatchX86

// A per-thread transition outlives the daemon that began it: the gates and stubs are in
// the target and need nobody. What a new daemon needs to finish it is in the journal;
// finishing forward keeps the guarantee (no call chain mixes versions), which putting
// the old cells back at once would break for a thread already switched and running
// inside a new version (measured: 1-2 mixed calls per killed round).

/// What a transition needs to be finished by a daemon other than the one that began
/// it, appended to the operation's journal before any cell or return address is
/// redirected.
struct TransitionRecord: Codable {
  struct Point: Codable {
    var tid: Int32
    var tls: UInt64
    var returnSlot: UInt64
    var returnAddress: UInt64
    var function: String
  }

  struct Removal: Codable {
    var oldAddr: UInt64
    var install: HookInstall
    var objectBytes: [UInt8]?
  }

  struct Library: Codable {
    var handle: UInt64
    var dlclose: UInt64?
    var memfd: Int32
    var name: String
  }

  var base: UInt64
  var table: UInt64
  var points: [Point]
  var cells: [ChangedCell]
  var removals: [Removal]
  var plan: Plan
  /// The target's state before the operation (what the stack check guards) and after.
  var before: TargetState
  var next: TargetState
  var library: Library?
  var pages: [TrampolinePage]
  var options: OperationOptions

  init(
    page: TransitionPage, points: [CatchPoint], cells: [ChangedCell],
    removals: [(oldAddr: UInt64, install: HookInstall)], objectBytes: [UInt64: [UInt8]], plan: Plan,
    before: TargetState, next: TargetState, acquired: Transaction.Acquired, options: OperationOptions
  ) {
    base = page.base
    table = page.table
    self.points = points.map {
      Point(
        tid: $0.tid, tls: $0.tls, returnSlot: $0.returnSlot, returnAddress: $0.returnAddress,
        function: $0.function)
    }
    self.cells = cells
    self.removals = removals.map {
      Removal(oldAddr: $0.oldAddr, install: $0.install, objectBytes: objectBytes[$0.oldAddr])
    }
    self.plan = plan
    self.before = before
    self.next = next
    library = acquired.library.map {
      Library(handle: $0.handle, dlclose: $0.dlclose, memfd: $0.memfd, name: $0.name)
    }
    pages = acquired.pages
    self.options = options
  }

  /// The transition as the daemon that began it held it, with the writes journaled
  /// before it died and a journal to go on appending to.
  func pending(writes: [UndoJournal.Entry], journal: UndoJournal?) -> PendingTransition? {
    guard
      let page = TransitionPage(
        base: base, table: table, threads: points.map(\.tls),
        routes: cells.map { TransitionPage.Route(old: $0.old, new: $0.new) },
        returns: points.map(\.returnAddress))
    else { return nil }
    let caught = points.map {
      CatchPoint(
        tid: $0.tid, tls: $0.tls, returnSlot: $0.returnSlot, returnAddress: $0.returnAddress,
        function: $0.function, frame: StackFrame(index: 0, pc: $0.returnAddress, isActivation: false))
    }
    var bytes: [UInt64: [UInt8]] = [:]
    for removal in removals { bytes[removal.oldAddr] = removal.objectBytes }
    let pending = PendingTransition(
      page: page, points: caught, cells: cells, removals: removals.map { ($0.oldAddr, $0.install) },
      plan: plan, next: next, writes: writes, journal: journal, objectBytes: bytes)
    pending.acquired = Transaction.Acquired(
      library: library.map { ($0.handle, $0.dlclose, $0.memfd, $0.name) }, pages: pages)
    return pending
  }
}

extension Engine {
  /// Finishes a transition whose daemon died (`TransitionRecord`): waits for its
  /// threads as `finish` does, then commits; reversed, as a live daemon would, if they
  /// do not switch in time (then throws why). Returns what was done, for the audit
  /// log, or nil when the record does not rebuild the transition (put it back instead).
  func finishInterruptedTransition(
    _ record: TransitionRecord, writes: [UndoJournal.Entry], journalPath: String
  ) throws -> String? {
    let pid = record.before.id.pid
    guard let pending = record.pending(writes: writes, journal: UndoJournal(reopening: journalPath)) else {
      return nil
    }
    guard try Self.transitionBegan(pending, process: TargetProcess.inspect(pid)) else { return nil }
    // Threads that left a frame by `longjmp` are caught again only with the check.
    let check = try? StackCheck(plan: record.plan, state: record.before, image: ProcessImage(pid: pid))
    try store.locked { session in
      guard (session.registry.target(record.before.id)?.generation ?? 0) == record.before.generation else {
        return
      }
      _ = try finish(pending, check: check, pid: pid, session: session, options: record.options)
    }
    return "finished a transition that swpatch began and did not finish (\(pending.points.count) threads)"
  }

  /// Whether the dead daemon got as far as making the transition live: its pages hold
  /// their code and table and every cell goes through its gate. A death before that
  /// (the record is written first) leaves pages without code: catching a thread again
  /// into such a page would send it into zeros (measured: SIGSEGV in the kill test), so
  /// such an operation is put back instead, which no thread has yet noticed.
  static func transitionBegan(_ pending: PendingTransition, process: TargetProcess) -> Bool {
    let page = pending.page
    var expected = page.bytes
    var found = process.peek(at: page.base, count: Int(TransitionPage.size))
    guard found.count == expected.count else { return false }
    // A stub's return cell is rewritten when its thread is caught again at another frame.
    for i in pending.points.indices {
      let at = Int(page.returnCell(i) - page.base)
      expected.replaceSubrange(at..<at + 8, with: [UInt8](repeating: 0, count: 8))
      found.replaceSubrange(at..<at + 8, with: [UInt8](repeating: 0, count: 8))
    }
    guard found == expected else { return false }
    // A table entry's low byte becomes 1 as its thread switches.
    let table = process.peek(at: page.table, count: page.tableBytes.count)
    guard table.count == page.tableBytes.count,
      zip(table, page.tableBytes).enumerated().allSatisfy({ i, pair in
        pair.0 == pair.1 || (i % 8 == 0 && pair.0 == 1)
      })
    else { return false }
    return pending.cells.enumerated().allSatisfy { i, cell in
      let value = process.peek(at: cell.cell, count: 8)
      return value.count == 8 && TrampolineSlot.target(ofCell: value) == page.gateAddress(i)
    }
  }
}
