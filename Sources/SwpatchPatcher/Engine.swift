import Foundation
import SwpatchBase
import SwpatchProcess
import SwpatchProtocol
import SwpatchRegistry
import SwpatchSymbols
import SwpatchX86

/// The patching engine: validates a request, plans it with the registry, and carries
/// the plan out inside one stop of the target. Front ends (the CLI, later the daemon)
/// call only this.
public final class Engine: @unchecked Sendable {
  public let store: RegistryStore
  /// Content-addressed copies of the libraries loaded into targets.
  public let libraries: LibraryStore
  private let tracer = TracerThread.shared
  /// Told, once per operation, what a `stack` operation is waiting for (the CLI prints
  /// it on stderr); nil to stay quiet.
  public var progress: (@Sendable (String) -> Void)?

  public init(stateDirectory: String) {
    store = RegistryStore(directory: stateDirectory)
    libraries = LibraryStore(stateDirectory: stateDirectory)
  }

  // MARK: attach

  /// Loads the patch's library into `pid` and redirects every function, or changes
  /// nothing and throws.
  public func attach(
    pid: Int32, patch file: PatchFile, policy: DisablePolicy?, options: OperationOptions = .init()
  ) throws -> OperationReport {
    try failingAsExited(pid) {
      let process = try TargetProcess.inspect(pid)
      try process.checkPatchable()
      // Admitted once for every attempt; everything from here on reads the admitted copy,
      // never the operator's path again. A copy that ends up not loaded is removed, so
      // refused attaches leave nothing in the store.
      let stored = try libraries.admit(file.library)
      var loaded = false
      defer { if !loaded { libraries.release(stored) } }
      let report = try retryingWhileBlocked(options) {
        try attachOnce(pid: pid, patch: file, stored: stored, policy: policy, options: options)
      }
      loaded = !report.dryRun
      return report
    }
  }

  /// One attempt at `attach`; under `stack` consistency it throws `StackBlocked`, having
  /// changed nothing, while a thread is inside what the patch switches away from.
  private func attachOnce(
    pid: Int32, patch file: PatchFile, stored: StoredLibrary, policy: DisablePolicy?,
    options: OperationOptions
  ) throws -> OperationReport {
    let dryRun = options.dryRun
    let process = try TargetProcess.inspect(pid)
    try process.checkPatchable()
    let library = try openLibrary(stored.path, shownAs: file.library)
    let loadTimeCode = library.loadTimeCode
    if !loadTimeCode.isEmpty && !options.allowConstructors {
      throw PatchError.libraryHasConstructors(path: file.library, functions: loadTimeCode)
    }
    let newSymbols = try file.functions.map { try ProcessImage.librarySymbol($0.new, in: library) }
    return try store.locked { session in
      let image = try ProcessImage(pid: pid)
      try checkBuildIDs(file.buildIDs, image: image)
      let id = TargetID(pid: pid, startTime: process.startTime)
      let execID = TargetProcess.execID(of: pid).map(hexBytes)
      let state =
        session.registry.target(id) ?? inheritedState(id, registry: session.registry, execID: execID)
        ?? .new(id: id, executable: process.executable, policy: policy ?? .stack, execID: execID)
      let checks = FunctionChecks(image: image, process: process, library: library, force: options.force)
      var sizes: [UInt64: UInt64] = [:]
      var sites: [FunctionSite] = []
      var notes: [String] = []
      for (function, newSymbol) in zip(file.functions, newSymbols) {
        let old = try image.resolve(function.old, in: function.object, sympos: function.sympos)
        guard old.kind != .ifunc else {
          throw PatchError.ifunc(
            name: old.name, object: old.object,
            example: image.ifuncImplementation(of: old.name, in: old.object))
        }
        let clones = image.clones(of: old.name, in: old.object).map(\.name)
        if !clones.isEmpty {
          notes.append(
            "\(old.name) has compiler clones (\(clones.joined(separator: ", "))); callers may reach those instead"
          )
        }
        try checkRoom(old, process: process)
        // A hooked function's entry already holds our jump: its code was checked then.
        sizes[old.address] =
          state.hook(at: old.address) == nil ? try checks.rewritableSize(of: old) : old.size
        notes += try checks.signatureNotes(old: old, new: newSymbol)
        notes += checks.inlineNotes(old: old)
        sites.append(FunctionSite(name: old.name, object: old.object, oldAddr: old.address))
      }
      let objectBytes = try checkedObjectBytes(
        sites.filter { state.hook(at: $0.oldAddr) == nil }, process: process)
      func patch(bias: UInt64) -> Patch {
        Patch(
          id: file.id, library: file.library,
          functions: zip(zip(sites, file.functions), newSymbols).map { pair, symbol in
            PatchFunction(site: pair.0, replacement: pair.1.new, replacementAddr: bias &+ symbol.value)
          }, replace: file.replace, requires: file.requires, sha256: stored.sha256)
      }
      // Planned once before the target is touched, so every refusal comes first; the
      // addresses are link-time offsets until the library is loaded.
      let draft = try state.planAttach(patch(bias: 0), policy: policy)
      if dryRun {
        return report(
          draft, state: state, patch: patch(bias: 0), dryRun: true, stopped: .zero,
          notes: notes + ["library not loaded: replacement addresses are offsets in \(file.library)"])
      }
      let firstSite = sites[0].oldAddr
      // What is switched away from is known from the draft (it does not depend on where
      // the library lands), so the stacks are checked before the library is loaded: a
      // blocked attempt costs no dlopen and leaves nothing to undo.
      let check =
        options.consistency == .stack ? try StackCheck(plan: draft, state: state, image: image) : nil
      let (plan, newState, stopped) = try runStopped(
        pid: pid, state: state, session: session, options: options, check: check
      ) {
        transaction in
        let loaded = try transaction.loadLibrary(stored, elf: library, image: image, near: firstSite)
        // The other threads ran while dlopen did: one may have entered a function being
        // switched since the first check, so look again before anything is written.
        if loaded.loadedNow, let blocker = try check?.firstBlocker(in: transaction.target) {
          throw StackBlocked(blocker: blocker)
        }
        let plan = try state.planAttach(patch(bias: loaded.bias), policy: policy)
        let installs = try transaction.execute(plan, sizes: sizes, objectBytes: objectBytes)
        let libraries =
          loaded.loadedNow
          ? [LoadedLibrary(path: file.library, handle: loaded.handle, sha256: stored.sha256)] : []
        let next = try state.committing(
          plan, installs: installs, newPages: transaction.newPages, newLibraries: libraries)
        return (plan, next)
      }
      return report(
        plan, state: newState, patch: newState.patch(file.id)!, dryRun: false, stopped: stopped,
        notes: notes + (check?.notes ?? []))
    }
  }

  // MARK: enable / disable

  /// Re-enables a disabled patch (its replacement goes on top of each stack again).
  public func enable(pid: Int32, patchID: String, options: OperationOptions = .init()) throws
    -> OperationReport
  {
    try change(pid: pid, options: options) { try $0.planEnable(patchID) }
  }

  /// Disables a patch, as the target's policy allows.
  public func disable(pid: Int32, patchID: String, options: OperationOptions = .init()) throws
    -> OperationReport
  {
    try change(pid: pid, options: options) { try $0.planDisable(patchID) }
  }

  private func change(
    pid: Int32, options: OperationOptions, planning: (TargetState) throws -> Plan
  ) throws -> OperationReport {
    try failingAsExited(pid) {
      try retryingWhileBlocked(options) { try changeOnce(pid: pid, options: options, planning: planning) }
    }
  }

  /// Runs `body` on `pid`; if it fails and the process has exited (or is being killed)
  /// since it began, the failure is `processExited`, whichever step noticed first:
  /// ESRCH from ptrace, a /proc file read empty, a symbol missing from maps that vanished.
  private func failingAsExited<T>(_ pid: Int32, _ body: () throws -> T) throws -> T {
    let before = try? TargetProcess.inspect(pid)
    do {
      return try body()
    } catch {
      if let before, !TargetProcess.isAlive(pid: pid, startTime: before.startTime) {
        throw ProcessError.processExited(pid: pid)
      }
      throw error
    }
  }

  /// One attempt at `enable`/`disable`, as `attachOnce` is for `attach`.
  private func changeOnce(
    pid: Int32, options: OperationOptions, planning: (TargetState) throws -> Plan
  ) throws -> OperationReport {
    let dryRun = options.dryRun
    let process = try TargetProcess.inspect(pid)
    return try store.locked { session in
      let id = TargetID(pid: pid, startTime: process.startTime)
      let execID = TargetProcess.execID(of: pid).map(hexBytes)
      guard
        let state = session.registry.target(id)
          ?? inheritedState(id, registry: session.registry, execID: execID)
      else { throw PatchError.notPatched(pid: pid) }
      let plan = try planning(state)
      let patch = state.patch(plan.operation.patchID)!
      if dryRun {
        return report(plan, state: state, patch: patch, dryRun: true, stopped: .zero, notes: [])
      }
      if plan.effects.isEmpty {
        // Nothing to write (e.g. disabling a patch that is not on top under `any`):
        // record the new state without stopping the target at all.
        let next = try state.committing(plan, installs: [:])
        try session.save(next)
        return report(
          plan, state: next, patch: next.patch(patch.id)!, dryRun: false, stopped: .zero, notes: [])
      }
      try process.checkPatchable()
      let sizes = try functionSizes(plan, pid: pid)
      let objectBytes = try checkedObjectBytes(plan.effects.compactMap(\.installedSite), process: process)
        .merging(
          TargetProcess.objectBytes(pid: pid, at: plan.effects.compactMap(\.removedAddress), count: 32)
        ) { new, _ in new }
      let check =
        options.consistency == .stack
        ? try StackCheck(plan: plan, state: state, image: ProcessImage(pid: pid)) : nil
      let (done, newState, stopped) = try runStopped(
        pid: pid, state: state, session: session, options: options, check: check
      ) {
        transaction in
        let installs = try transaction.execute(plan, sizes: sizes, objectBytes: objectBytes)
        return (plan, try state.committing(plan, installs: installs))
      }
      return report(
        done, state: newState, patch: newState.patch(patch.id)!, dryRun: false, stopped: stopped,
        notes: check?.notes ?? [])
    }
  }

  // MARK: status

  /// The registry as it stands, exited targets dropped (and named).
  public func status(pid: Int32? = nil) throws -> (report: StatusReport, dropped: [TargetID]) {
    try store.locked { session in
      let targets = session.registry.targets.filter { pid == nil || $0.id.pid == pid }
      return (StatusReport(targets: targets), session.dropped.filter { pid == nil || $0.pid == pid })
    }
  }

  // MARK: Recovery

  /// Puts back the bytes of operations that a killed swpatch left between its first
  /// write into a target and the registry's record of the result (see `UndoJournal`),
  /// so that each target is again in the state the registry describes. Returns, per
  /// target, what was done.
  public func recoverInterruptedOperations() -> [(target: TargetID, message: String)] {
    var done: [(TargetID, String)] = []
    for leftover in UndoJournal.leftovers(in: store.state) {
      defer { unlink(leftover.path) }
      let header = leftover.header
      let id = TargetID(pid: header.pid, startTime: header.startTime)
      guard TargetProcess.isAlive(pid: id.pid, startTime: id.startTime), !leftover.entries.isEmpty
      else { continue }
      // A generation past the journal's: the registry did record the result.
      let current = (try? store.snapshot())?.target(id)?.generation ?? 0
      guard current == header.generation else { continue }
      do {
        try tracer.withStopped(id.pid) { target in
          for entry in leftover.entries.reversed() { try target.write(entry.bytes, at: entry.address) }
        }
        done.append(
          (id, "put back \(leftover.entries.count) writes of an operation that swpatch did not finish"))
      } catch {
        done.append((id, "could not put back the writes of an unfinished operation: \(error)"))
      }
    }
    return done
  }

  // MARK: Drift

  /// The hooks of `state` whose memory is not what the registry recorded, keyed by
  /// old_addr, with what was found. Read without stopping the target: each hook's entry
  /// must hold swpatch's jump and its slot cell the address of the top replacement.
  public func drift(of state: TargetState) -> [UInt64: String] {
    drift(of: state, in: state.id.pid)
  }

  /// The hooks of `state` that the memory of `pid` does not hold as recorded.
  private func drift(of state: TargetState, in pid: Int32) -> [UInt64: String] {
    guard let process = try? TargetProcess.inspect(pid) else { return [:] }
    var found: [UInt64: String] = [:]
    func shown(_ bytes: [UInt8]) -> String { bytes.isEmpty ? "unreadable memory" : hexBytes(bytes) }
    for hook in state.sortedHooks {
      let install = hook.install
      let entry = process.peek(at: install.entryAddr, count: install.jumpBytes.count)
      if entry != install.jumpBytes {
        found[hook.site.oldAddr] =
          "entry \(hexAddress(install.entryAddr)) holds \(shown(entry)), not swpatch's jump \(shown(install.jumpBytes))"
        continue
      }
      let expected = hook.active.map { TrampolineSlot.cell(target: $0.address) }
      let cell = process.peek(at: install.cellAddr, count: 8)
      if let expected, cell != expected {
        found[hook.site.oldAddr] =
          "slot cell \(hexAddress(install.cellAddr)) holds \(shown(cell)), not the address of \(hook.active!.replacement) (\(hexAddress(hook.active!.address)))"
      }
    }
    return found
  }

  // MARK: Inherited hooks

  /// For a process the registry does not know: the registry entry of the patched
  /// process it was forked from, adopted as its own, when its memory holds every one of
  /// that entry's hooks exactly (entry jumps, slot cells, trampoline pages). Only a copy
  /// of the parent's memory does. The parent (`PPid`) is tried first.
  private func inheritedState(_ id: TargetID, registry: RegistryState, execID: String?) -> TargetState? {
    let parent = TargetProcess.parentPid(of: id.pid)
    let candidates = registry.targets.filter { $0.id.pid != id.pid && !$0.hooks.isEmpty }
      .sorted { ($0.id.pid == parent ? 0 : 1) < ($1.id.pid == parent ? 0 : 1) }
    for candidate in candidates where holdsHooks(of: candidate, pid: id.pid) {
      return candidate.adopted(by: id, execID: execID)
    }
    return nil
  }

  /// Whether `pid`'s memory holds every hook and trampoline page of `state`.
  private func holdsHooks(of state: TargetState, pid: Int32) -> Bool {
    guard let process = try? TargetProcess.inspect(pid) else { return false }
    let pagesOurs = state.pages.allSatisfy { page in
      Transaction.isOurHeader(process.peek(at: page.base, count: Int(TrampolinePageLayout.firstSlotOffset)))
    }
    return pagesOurs && drift(of: state, in: pid).isEmpty
  }

  /// The object file's bytes at each of `sites` (32 bytes from its first), after checking
  /// that the bytes a hook would overwrite still hold them: a refusal before anything is
  /// stopped (the stop checks again, exactly, before the write).
  private func checkedObjectBytes(_ sites: [FunctionSite], process: TargetProcess) throws -> [UInt64: [UInt8]]
  {
    let found = TargetProcess.objectBytes(pid: process.pid, at: sites.map(\.oldAddr), count: 32)
    for site in sites {
      guard let file = found[site.oldAddr], file.count >= 4 else { continue }
      let entry = X86.jumpSite(functionAt: site.oldAddr, code: file)
      let covered = Int(entry - site.oldAddr) + X86.nearJumpLength
      let now = process.peek(at: site.oldAddr, count: min(covered, file.count))
      guard !now.isEmpty, now != Array(file.prefix(now.count)) else { continue }
      let at = Int(entry - site.oldAddr)
      throw PatchError.entryModified(
        function: site.name, address: entry, found: Array(now[at...]), file: Array(file[at..<now.count]),
        inherited: inheritedJump(Array(now[at...]), at: entry, process: process))
    }
    return found
  }

  /// Whether `bytes` at `entry` are a `jmp rel32` into a page with swpatch's header.
  private func inheritedJump(_ bytes: [UInt8], at entry: UInt64, process: TargetProcess) -> Bool {
    guard bytes.count >= 5, bytes[0] == 0xe9 else { return false }
    let rel = Int32(
      bitPattern: UInt32(bytes[1]) | UInt32(bytes[2]) << 8 | UInt32(bytes[3]) << 16 | UInt32(bytes[4]) << 24)
    let destination = UInt64(bitPattern: Int64(bitPattern: entry + 5) + Int64(rel))
    let page = destination & ~(TrampolinePageLayout.size - 1)
    return Transaction.isOurHeader(process.peek(at: page, count: Int(TrampolinePageLayout.firstSlotOffset)))
  }

  // MARK: The stop

  /// Stops every thread of the target, runs `body` in a transaction, persists the new
  /// state while still stopped, and resumes. Any failure rolls memory back first.
  /// With a stack `check`, a thread inside what is switched away from makes the attempt
  /// throw `StackBlocked` before anything is written.
  private func runStopped(
    pid: Int32, state: TargetState, session: RegistryStore.Session, options: OperationOptions,
    check: StackCheck? = nil, _ body: @escaping (Transaction) throws -> (Plan, TargetState)
  ) throws -> (Plan, TargetState, Duration) {
    let timeout = options.callTimeout
    let ((plan, next), stopped) = try tracer.withStoppedMeasured(pid) { target in
      let transaction = Transaction(target: target, state: state, callTimeout: timeout)
      do {
        try transaction.checkPages()
        transaction.journal = try UndoJournal(
          state: self.store.state, target: state.id, generation: state.generation)
        if let blocker = try check?.firstBlocker(in: target) { throw StackBlocked(blocker: blocker) }
        let (plan, next) = try body(transaction)
        try session.save(next)
        transaction.journal?.discard()
        return (plan, next)
      } catch {
        transaction.rollback()
        throw error
      }
    }
    return (plan, next, stopped)
  }

  // MARK: Checks before anything is touched

  /// Opens the stored copy at `path`; messages name the operator's path `shownAs`.
  private func openLibrary(_ path: String, shownAs: String) throws -> ElfFile {
    let library: ElfFile
    do {
      library = try SymbolCache.shared.file(at: path)
    } catch .cannotOpen(_, let reason) {
      throw SymbolError.badLibrary(path: shownAs, reason: "is \(reason)")
    }
    do {
      try library.checkLoadableLibrary()
    } catch .badLibrary(_, let reason) {
      throw SymbolError.badLibrary(path: shownAs, reason: reason)
    }
    return library
  }

  /// Every pinned object must be loaded with exactly the pinned build id.
  private func checkBuildIDs(_ pins: [String: String], image: ProcessImage) throws {
    for (name, expected) in pins.sorted(by: { $0.key < $1.key }) {
      let loaded = image.objects.filter { $0.name == name }
      guard !loaded.isEmpty else {
        throw PatchError.buildIDMismatch(object: name, expected: expected, actual: nil)
      }
      guard loaded.contains(where: { $0.buildID == expected }) else {
        throw PatchError.buildIDMismatch(
          object: name, expected: expected, actual: loaded[0].buildID ?? "")
      }
    }
  }

  /// A function must hold the entry jump (after its endbr64, if any).
  private func checkRoom(_ symbol: ResolvedSymbol, process: TargetProcess) throws {
    let code = process.peek(at: symbol.address, count: 4)
    let offset = X86.jumpSite(functionAt: symbol.address, code: code) - symbol.address
    let needed = offset + UInt64(X86.nearJumpLength)
    guard symbol.size >= needed else {
      throw PatchError.tooShort(function: symbol.name, size: symbol.size, needed: needed)
    }
  }

  /// Sizes of the functions a plan hooks afresh (re-enabling a patch whose hooks were
  /// all removed), looked up again by name and address.
  private func functionSizes(_ plan: Plan, pid: Int32) throws -> [UInt64: UInt64] {
    var sizes: [UInt64: UInt64] = [:]
    var image: ProcessImage?
    for case .installHook(let site, _) in plan.effects {
      if image == nil { image = try ProcessImage(pid: pid) }
      let match = image!.candidates(site.name, in: site.object).first { $0.address == site.oldAddr }
      sizes[site.oldAddr] = match?.size ?? 0
    }
    return sizes
  }

  private func report(
    _ plan: Plan, state: TargetState, patch: Patch, dryRun: Bool, stopped: Duration, notes: [String]
  ) -> OperationReport {
    OperationReport(
      pid: state.id.pid, operation: plan.operation.verb, patch: patch.id, dryRun: dryRun,
      policy: state.policy.rawValue,
      functions: patch.functions.map {
        .init(
          function: $0.site.name, object: $0.site.object, oldAddr: Address($0.site.oldAddr),
          replacement: $0.replacement, address: Address($0.replacementAddr))
      }, plan: plan.steps, alsoDisabled: plan.alsoDisabled,
      stoppedMicroseconds: stopped.microseconds, notes: notes)
  }
}
