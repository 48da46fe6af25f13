import Foundation
import SwpatchProcess
import SwpatchRegistry
import SwpatchState
import SwpatchX86
import Testing

@testable import SwpatchPatcher

/// The transaction of an operation, driven against an in-memory target: where slots and
/// pages go, what a failed write at any step leaves (nothing), what the undo journal
/// puts back, and what drift is. The integration suites prove the same on real processes.
@Suite struct TransactionTests {
  static let base: UInt64 = 0x5555_0000_0000
  /// The program's code: each function is 32 bytes of `push %rbp; mov %rsp,%rbp; nop...; ret`.
  static let program: [UInt8] = (0..<256).flatMap { _ in
    [0x55, 0x48, 0x89, 0xe5] + [UInt8](repeating: 0x90, count: 27) + [0xc3]
  }
  static let library: UInt64 = 0x7f12_0000_0000

  static func site(_ i: Int) -> FunctionSite {
    FunctionSite(name: "f\(i)", object: "app", oldAddr: base + UInt64(i) * 32)
  }

  static func patch(_ id: String, functions: Range<Int>, version: UInt64 = 0) -> Patch {
    Patch(
      id: id, library: "/\(id).so",
      functions: functions.map {
        PatchFunction(
          site: site($0), replacement: "f\($0)_\(id)",
          replacementAddr: library + version * 0x1000 + UInt64($0) * 16)
      })
  }

  static func fresh() -> (FakeTarget, TargetState) {
    (
      FakeTarget(program: program, at: base),
      .new(id: TargetID(pid: 4242, startTime: 1), executable: "/srv/app", policy: .stack)
    )
  }

  /// Sizes and object bytes as the engine gives them: every function 32 bytes, its file
  /// bytes those of the program.
  static func facts(_ functions: Range<Int>) -> (sizes: [UInt64: UInt64], bytes: [UInt64: [UInt8]]) {
    var sizes: [UInt64: UInt64] = [:]
    var bytes: [UInt64: [UInt8]] = [:]
    for i in functions {
      sizes[site(i).oldAddr] = 32
      bytes[site(i).oldAddr] = Array(program[i * 32..<i * 32 + 32])
    }
    return (sizes, bytes)
  }

  /// Plans and carries out `plan` on `target`, returning the committed state.
  static func run(_ plan: Plan, on target: FakeTarget, from state: TargetState, functions: Range<Int>) throws
    -> TargetState
  {
    let transaction = Transaction(target: target, state: state, callTimeout: .seconds(1))
    let (sizes, bytes) = facts(functions)
    do {
      try transaction.checkPages()
      let installs = try transaction.execute(plan, sizes: sizes, objectBytes: bytes)
      return try state.committing(plan, installs: installs, newPages: transaction.newPages)
    } catch {
      transaction.rollback()
      throw error
    }
  }

  @Test func slotsFillAPageNearTheFunctionsAndSpillIntoASecondOne() throws {
    let (target, state) = Self.fresh()
    let count = TrampolinePageLayout.slotCount + 4
    let plan = try state.planAttach(Self.patch("p1", functions: 0..<count), policy: nil)
    let next = try Self.run(plan, on: target, from: state, functions: 0..<count)
    // Two slots a hook: its jump's, and its relocated prologue's.
    let perPage = TrampolinePageLayout.slotCount
    #expect(next.pages.count == (2 * count + perPage - 1) / perPage)
    #expect(next.sortedHooks.allSatisfy { $0.install.prologueAddr != nil })
    let slots = next.sortedHooks.map(\.install.slotAddr)
    #expect(Set(slots).count == count)
    for hook in next.sortedHooks {
      // Every entry jump is the 5-byte rel32 one: its slot is within ±2 GiB.
      #expect(hook.install.jumpBytes.count == 5 && hook.install.jumpBytes[0] == 0xe9)
      let entry = try target.read(at: hook.install.entryAddr, count: 5)
      #expect(entry == hook.install.jumpBytes)
      #expect(hook.install.originalBytes == [0x55, 0x48, 0x89, 0xe5, 0x90])
      let cell = try target.read(at: hook.install.cellAddr, count: 8)
      #expect(cell == TrampolineSlot.cell(target: hook.active!.address))
    }
    for page in next.pages {
      #expect(Transaction.isOurHeader(try target.read(at: page.base, count: 64)))
    }
  }

  @Test func aWriteThatFailsAtAnyStepOfAnAttachLeavesTheTargetAsItWas() throws {
    let (probe, state) = Self.fresh()
    let plan = try state.planAttach(Self.patch("p1", functions: 0..<3), policy: nil)
    _ = try Self.run(plan, on: probe, from: state, functions: 0..<3)
    let steps = probe.writes
    #expect(steps >= 7)  // a page, then per function a slot and an entry
    for step in 1...steps {
      let (target, state) = Self.fresh()
      let before = try target.mappings()
      target.failWrite = step
      #expect(throws: ProcessError.self, "step \(step)") {
        try Self.run(plan, on: target, from: state, functions: 0..<3)
      }
      #expect(try target.mappings() == before, "step \(step): a page stayed mapped")
      #expect(try target.read(at: Self.base, count: Self.program.count) == Self.program, "step \(step)")
      #expect(!target.hasHijackStub, "step \(step): the stub of an unmapped page is still in use")
    }
  }

  @Test func aWriteThatFailsAtAnyStepOfADisableLeavesTheTargetAsItWas() throws {
    let (probe, state) = Self.fresh()
    let attach = try state.planAttach(Self.patch("p1", functions: 0..<3), policy: nil)
    let patched = try Self.run(attach, on: probe, from: state, functions: 0..<3)
    let disable = try patched.planDisable("p1")
    let writesBefore = probe.writes
    _ = try Self.run(disable, on: probe, from: patched, functions: 0..<3)
    #expect(try probe.read(at: Self.base, count: Self.program.count) == Self.program)
    let steps = probe.writes - writesBefore
    for step in 1...steps {
      let (target, state) = Self.fresh()
      let patched = try Self.run(attach, on: target, from: state, functions: 0..<3)
      let memory = target.regions
      target.failWrite = target.writes + step
      #expect(throws: ProcessError.self, "step \(step)") {
        try Self.run(disable, on: target, from: patched, functions: 0..<3)
      }
      #expect(target.regions.map(\.bytes) == memory.map(\.bytes), "step \(step)")
      #expect(Drift.of(patched, read: { (try? target.read(at: $0, count: $1)) ?? [] }).isEmpty)
    }
  }

  @Test func theUndoJournalOfAnOperationCutShortPutsEveryByteBack() throws {
    let directory = NSTemporaryDirectory() + "swpatch-journal-" + UUID().uuidString
    defer { try? FileManager.default.removeItem(atPath: directory) }
    let store = StateDirectory(directory)
    let (target, state) = Self.fresh()
    let plan = try state.planAttach(Self.patch("p1", functions: 0..<5), policy: nil)
    let transaction = Transaction(target: target, state: state, callTimeout: .seconds(1))
    transaction.journal = try UndoJournal(state: store, target: state.id, generation: state.generation)
    let (sizes, bytes) = Self.facts(0..<5)
    _ = try transaction.execute(plan, sizes: sizes, objectBytes: bytes)
    // swpatch dies here: no commit, no rollback. The next daemon finds the journal.
    #expect(try target.read(at: Self.base, count: 32) != Array(Self.program.prefix(32)))
    let leftovers = UndoJournal.leftovers(in: store)
    #expect(leftovers.count == 1)
    let leftover = try #require(leftovers.first)
    #expect(leftover.header.pid == 4242 && leftover.header.generation == 0)
    try UndoJournal.putBack(leftover.entries, into: target)
    #expect(try target.read(at: Self.base, count: Self.program.count) == Self.program)
  }

  @Test func driftNamesTheEntryOrTheCellThatChanged() throws {
    let (target, state) = Self.fresh()
    let plan = try state.planAttach(Self.patch("p1", functions: 0..<2), policy: nil)
    let next = try Self.run(plan, on: target, from: state, functions: 0..<2)
    func drift() -> [UInt64: String] { Drift.of(next) { (try? target.read(at: $0, count: $1)) ?? [] } }
    #expect(drift().isEmpty)
    let first = next.sortedHooks[0]
    try target.write([0, 0, 0, 0, 0, 0, 0, 0], at: first.install.cellAddr)
    #expect(drift()[first.site.oldAddr]?.contains("slot cell") == true)
    let second = next.sortedHooks[1]
    try target.write([0xcc], at: second.install.entryAddr)
    #expect(drift()[second.site.oldAddr]?.contains("entry") == true)
    #expect(drift().count == 2)
  }

  @Test func aRecordedPageThatIsNoLongerOursStopsTheOperationBeforeAnyWrite() throws {
    let (target, state) = Self.fresh()
    let plan = try state.planAttach(Self.patch("p1", functions: 0..<1), policy: nil)
    let next = try Self.run(plan, on: target, from: state, functions: 0..<1)
    let page = try #require(next.pages.first)
    // As after execve: something else lives at the page's address now.
    try target.write([0x48, 0x83, 0xec, 0x08], at: page.base)
    let writes = target.writes
    let again = try next.planAttach(Self.patch("p2", functions: 1..<2, version: 1), policy: nil)
    #expect(throws: PatchError.self) { try Self.run(again, on: target, from: next, functions: 1..<2) }
    #expect(target.writes == writes)
  }

  @Test func aThreadStoppedInsideTheBytesOfAnEntryIsMovedIntoTheRelocatedCopy() throws {
    let (target, state) = Self.fresh()
    target.rips[4243] = Self.site(0).oldAddr + 1  // after `push %rbp`, inside the jump's 5 bytes
    let plan = try state.planAttach(Self.patch("p1", functions: 0..<1), policy: nil)
    let next = try Self.run(plan, on: target, from: state, functions: 0..<1)
    let prologue = try #require(next.sortedHooks[0].install.prologueAddr)
    // The same instruction, `mov %rsp,%rbp`, in the copy: one byte in, as in the original.
    #expect(target.rips[4243] == prologue + 1)
    let copy = try target.read(at: prologue, count: 9)
    #expect(Array(copy.prefix(9)) == [0x55, 0x48, 0x89, 0xe5, 0x90, 0xe9] + Array(copy[6..<9]))
    // Disabled, the hook goes and the thread (still there) goes back to the original.
    let disable = try next.planDisable("p1")
    _ = try Self.run(disable, on: target, from: next, functions: 0..<1)
    #expect(target.rips[4243] == Self.site(0).oldAddr + 1)
    #expect(try target.read(at: prologue, count: 32) == TrampolineSlot.freed)
    #expect(try target.read(at: Self.base, count: Self.program.count) == Self.program)
  }

  @Test func aRollbackPutsAMovedThreadBackBeforeUndoingTheCodeUnderIt() throws {
    let (probe, state) = Self.fresh()
    let plan = try state.planAttach(Self.patch("p1", functions: 0..<1), policy: nil)
    _ = try Self.run(plan, on: probe, from: state, functions: 0..<1)
    // The last write is the entry jump: fail it, after the thread was moved.
    let (target, _) = Self.fresh()
    target.rips[4243] = Self.site(0).oldAddr + 1
    target.failWrite = probe.writes
    #expect(throws: ProcessError.self) { try Self.run(plan, on: target, from: state, functions: 0..<1) }
    #expect(target.rips[4243] == Self.site(0).oldAddr + 1)
    #expect(try target.read(at: Self.base, count: Self.program.count) == Self.program)
  }
}
