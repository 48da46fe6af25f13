import FoundationEssentials
import Glibc
import SwpatchBase
import SwpatchProcess
import SwpatchProtocol
import SwpatchRegistry
import SwpatchSymbols
import SwpatchX86

/// The patching engine: validates a request, plans it with the registry, and carries
/// the plan out inside one stop of the target. Front ends (the CLI, later the daemon)
/// call only this.
public final class Engine: Sendable {
  public let store: RegistryStore
  /// Content-addressed copies of the libraries loaded into targets.
  public let libraries: LibraryStore
  let tracer = TracerThread.shared
  /// Told, once per operation, what a `stack` operation is waiting for (the CLI prints
  /// it on stderr); nil to stay quiet.
  public let progress: (@Sendable (String) -> Void)?

  public init(stateDirectory: String, progress: (@Sendable (String) -> Void)? = nil) {
    store = RegistryStore(directory: stateDirectory)
    libraries = LibraryStore(stateDirectory: stateDirectory)
    self.progress = progress
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
    let library = try openLibrary(stored.path, shownAs: file.library)
    let loadTimeCode = library.loadTimeCode
    if !loadTimeCode.isEmpty && !options.allowConstructors {
      throw PatchError.libraryHasConstructors(path: file.library, functions: loadTimeCode)
    }
    let newSymbols = try file.functions.map { try ProcessImage.librarySymbol($0.new, in: library) }
    let prevSymbols = try file.functions.map { function in
      try function.prev.map { try prevVariable($0, in: library, shownAs: file.library) }
    }
    return try perform(pid: pid, options: options) { session, process in
      try process.checkPatchable()
      let image = try ProcessImage(pid: pid)
      try checkBuildIDs(file.buildIDs, image: image)
      let state =
        knownOrInherited(process, registry: session.registry)
        ?? .new(
          id: process.id, executable: process.executable, policy: policy ?? .stack,
          execID: RegistryStore.execIdentity(of: pid))
      let resolved = try resolveSites(
        file.functions, newSymbols: newSymbols, state: state, image: image, process: process,
        library: library, force: options.force)
      let sites = resolved.sites
      let externs = try ExternBindings(
        library: library, shownAs: file.library, pins: file.externs, replaced: file.functions.map(\.old),
        image: image)
      func patch(bias: UInt64) -> Patch {
        Patch(
          id: file.id, library: file.library,
          functions: sites.indices.map { i in
            PatchFunction(
              site: sites[i], replacement: file.functions[i].new,
              replacementAddr: bias &+ newSymbols[i].value,
              prevCell: prevSymbols[i].map { bias &+ $0.value })
          }, replace: file.replace, requires: file.requires, sha256: stored.sha256, patchFile: file.source)
      }
      // Planned once before the target is touched, so every refusal comes first; the
      // addresses are link-time offsets until the library is loaded.
      let upgrade = options.upgrade == true
      func plan(bias: UInt64) throws -> Plan {
        upgrade
          ? try state.planUpgrade(patch(bias: bias)) : try state.planAttach(patch(bias: bias), policy: policy)
      }
      let draft = try plan(bias: 0)
      // The old build is not unloaded here: a thread switched on return may still be in
      // it, and `remove` unloads only the library of the build a patch names now.
      let upgradeNotes =
        upgrade
        ? state.patch(file.id).map {
          ["the old build (SHA-256 \($0.sha256 ?? "unknown")) stays loaded in the target"]
        } ?? [] : []
      return PreparedOperation(
        state: state, draft: draft, patchID: file.id, image: image, sizes: resolved.sizes,
        objectBytes: resolved.objectBytes, notes: resolved.notes + externs.notes + upgradeNotes,
        externs: externs.lines,
        library: LibraryToLoad(
          stored: stored, elf: library, shownAs: file.library, near: sites[0].oldAddr, edits: externs.edits,
          replan: { bias in try plan(bias: bias) }))
    }
  }

  // MARK: enable / disable

  /// Re-enables a disabled patch (its replacement goes on top of each stack again).
  public func enable(pid: Int32, patchID: String, options: OperationOptions = .init()) throws
    -> OperationReport
  {
    try change(
      pid: pid, options: options,
      notes: { state in
        state.patch(patchID).map { Self.changedOnDisk($0) } ?? []
      }
    ) { try $0.planEnable(patchID) }
  }

  /// Says so when the library file a patch was attached from no longer holds the
  /// content that was stored for it: enable brings back the stored copy, not the file.
  static func changedOnDisk(_ patch: Patch) -> [String] {
    guard let stored = patch.sha256 else { return [] }
    let now = LibraryStore.sha256(ofFileAt: patch.library)
    guard now != stored else { return [] }
    let found = now.map { "now has SHA-256 \($0)" } ?? "can no longer be read"
    return [
      "\(patch.library) has changed since '\(patch.id)' was stored (stored SHA-256 \(stored); the file \(found));"
        + " enabled the stored copy. To run the new build, attach it with --upgrade or under a new id"
    ]
  }

  /// Disables a patch, as the target's policy allows.
  public func disable(pid: Int32, patchID: String, options: OperationOptions = .init()) throws
    -> OperationReport
  {
    try change(pid: pid, options: options) { try $0.planDisable(patchID) }
  }

  private func change(
    pid: Int32, options: OperationOptions, notes: @escaping (TargetState) -> [String] = { _ in [] },
    planning: @escaping (TargetState) throws -> Plan
  ) throws -> OperationReport {
    try failingAsExited(pid) {
      try retryingWhileBlocked(options) {
        try perform(pid: pid, options: options) { session, process in
          guard let state = knownOrInherited(process, registry: session.registry) else {
            throw PatchError.notPatched(pid: pid)
          }
          let plan = try planning(state)
          var operation = PreparedOperation(state: state, draft: plan, patchID: plan.operation.patchID)
          operation.notes = notes(state)
          guard !plan.effects.isEmpty else { return operation }
          try process.checkPatchable()
          operation.sizes = try functionSizes(plan, pid: pid)
          operation.objectBytes = try checkedObjectBytes(
            plan.effects.compactMap(\.installedSite), alsoAt: plan.effects.compactMap(\.removedAddress),
            process: process)
          return operation
        }
      }
    }
  }

  /// Runs `body` on `pid`; if it fails and the process has exited (or is being killed)
  /// since it began, the failure is `processExited`, whichever step noticed first:
  /// ESRCH from ptrace, a /proc file read empty, a symbol missing from maps that vanished.
  func failingAsExited<T>(_ pid: Int32, _ body: () throws -> T) throws -> T {
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

  // MARK: The pipeline: prepare, plan, execute

  /// One attempt at any operation, the same for attach, enable and disable: with the
  /// registry locked, `prepare` resolves, checks and plans it without touching the
  /// target (every refusal comes from here); a dry run reports that plan; a plan that
  /// writes nothing is recorded without stopping the target; anything else is carried
  /// out in one stop (`execute(_:in:)`) and committed while the target is still held.
  private func perform(
    pid: Int32, options: OperationOptions,
    prepare: (RegistryStore.Session, TargetProcess) throws -> PreparedOperation
  ) throws -> OperationReport {
    let process = try TargetProcess.inspect(pid)
    return try store.locked { session in
      let operation = try prepare(session, process)
      let draft = operation.draft
      if options.dryRun {
        let unloaded = operation.library.map {
          ["library not loaded: replacement addresses are offsets in \($0.shownAs)"]
        }
        var planned = report(
          draft, state: operation.state, patch: draft.patch ?? operation.state.patch(operation.patchID)!,
          dryRun: true, stopped: .zero, notes: operation.notes + (unloaded ?? []))
        planned.externs = operation.externs
        return planned
      }
      if draft.effects.isEmpty && operation.library == nil {
        // Nothing to write (e.g. disabling a patch that is not on top under `any`):
        // record the new state without stopping the target at all.
        let next = try operation.state.committing(draft, installs: [:])
        try session.save(next)
        return report(
          draft, state: next, patch: next.patch(operation.patchID)!, dryRun: false, stopped: .zero,
          notes: operation.notes)
      }
      // What is switched away from is known from the draft (it does not depend on where
      // a library lands), so the stacks are checked before anything is loaded: a
      // blocked attempt costs no dlopen and leaves nothing to undo.
      let image = try operation.image ?? ProcessImage(pid: pid)
      let check =
        options.consistency == .stack
        ? try StackCheck(plan: draft, state: operation.state, image: image) : nil
      let catching = Self.threadsCanBeCaught(image)
      let (executed, stopped) = try runStopped(
        pid: pid, state: operation.state, session: session, options: options, check: check, catching: catching
      ) { transaction, target, points in
        try self.execute(
          operation, in: transaction, points: points, options: options,
          recheck: { try check?.catchPoints(in: target, allowed: catching) ?? [] })
      }
      var longest = stopped
      var transitionTime = Duration.zero
      var caught = 0
      if let pending = executed.transition {
        (longest, transitionTime) = try finish(
          pending, check: check, pid: pid, session: session, options: options)
        longest = max(longest, stopped)
        caught = pending.points.count
      }
      var done = report(
        executed.plan, state: executed.next, patch: executed.next.patch(operation.patchID)!, dryRun: false,
        stopped: longest, notes: operation.notes + (check?.notes ?? []))
      done.threadsMoved = executed.threadsMoved
      done.threadsCaught = caught
      done.transitionMicroseconds = transitionTime.microseconds
      done.externs = operation.externs
      return done
    }
  }

  /// Whether a thread of this process may be caught on return (the per-thread
  /// transition): not when C++ exceptions or cancellation could unwind through a
  /// redirected return address, which has no unwind information (libstdc++ and
  /// libgcc_s are the unwinder's users; C++ would call `std::terminate`).
  static func threadsCanBeCaught(_ image: ProcessImage) -> Bool {
    !image.objects.contains { $0.name.hasPrefix("libstdc++") || $0.name.hasPrefix("libgcc_s") }
  }

  /// What the stop carried out: the plan (planned again with the library's bias), the
  /// state to commit, and a transition still waiting for threads, if any.
  struct Executed {
    var plan: Plan
    var next: TargetState
    var threadsMoved: Int = 0
    var transition: PendingTransition?
  }

  /// Inside the stop: loads the library an attach brings (then plans again with its
  /// load bias), carries the plan out, and gives the state it commits to. `points` are
  /// the threads inside what is switched away from, as the stop found them; `recheck`
  /// finds them again after a `dlopen`, during which the other threads ran. With any,
  /// the plan's cells are gated and the operation waits for them (`PendingTransition`).
  func execute(
    _ operation: PreparedOperation, in transaction: Transaction, points: [CatchPoint] = [],
    options: OperationOptions = .init(), recheck: () throws -> [CatchPoint] = { [] }
  ) throws -> Executed {
    var plan = operation.draft
    var points = points
    var newLibraries: [LoadedLibrary] = []
    if let library = operation.library, let image = operation.image {
      let loaded = try transaction.loadLibrary(
        library.stored, elf: library.elf, image: image, near: library.near, edits: library.edits)
      // One of the other threads may have entered a function being switched while
      // dlopen ran, so look again before anything is written.
      if loaded.loadedNow { points = try recheck() }
      plan = try library.replan(loaded.bias)
      if loaded.loadedNow {
        newLibraries = [
          LoadedLibrary(path: library.shownAs, handle: loaded.handle, sha256: library.stored.sha256)
        ]
      }
    }
    let installs = try transaction.execute(
      plan, sizes: operation.sizes, objectBytes: operation.objectBytes, underTransition: !points.isEmpty)
    let next = try operation.state.committing(
      plan, installs: installs, newPages: transaction.newPages, newLibraries: newLibraries)
    var executed = Executed(plan: plan, next: next, threadsMoved: transaction.threadsMoved)
    if !points.isEmpty {
      let routed = transaction.changedCells.filter { $0.old != $0.new }
      let page = try transaction.beginTransition(points, cells: routed) { page in
        try transaction.journal?.record(
          transition: TransitionRecord(
            page: page, points: points, cells: routed, removals: transaction.deferredRemovals,
            objectBytes: operation.objectBytes, plan: plan, before: operation.state, next: next,
            acquired: transaction.acquired, options: options))
      }
      executed.transition = PendingTransition(
        page: page, points: points, cells: routed, removals: transaction.deferredRemovals, plan: plan,
        next: next, writes: transaction.writes, journal: transaction.journal,
        objectBytes: operation.objectBytes)
      executed.transition?.acquired = transaction.acquired
    }
    return executed
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
      // Every write was made and the target resumed: only the registry's record was
      // missing. Recording it now is what the dead daemon was about to do.
      if let commit = leftover.commit {
        do {
          try store.locked { session in
            guard (session.registry.target(id)?.generation ?? 0) == header.generation else { return }
            try session.save(commit)
          }
          done.append((id, "recorded the result of an operation that swpatch finished and did not record"))
        } catch {
          done.append((id, "could not record the result of a finished operation: \(error)"))
        }
        continue
      }
      // A transition under way is finished forward (or reversed by `finish` itself, as
      // a live daemon would); only one that cannot be rebuilt is simply put back.
      if let transition = leftover.transition {
        do {
          if let message = try finishInterruptedTransition(
            transition, writes: leftover.entries, journalPath: leftover.path)
          {
            done.append((id, message))
            continue
          }
        } catch {
          done.append((id, "an interrupted transition was reversed: \(error)"))
          continue
        }
      }
      do {
        try tracer.withStopped(id.pid) { target in try UndoJournal.putBack(leftover.entries, into: target) }
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
    return Drift.of(state) { process.peek(at: $0, count: $1) }
  }

  // MARK: Inherited hooks

  /// Adopts every child `parent` has forked that still runs its copy of the parent's
  /// hooks (see `inheritedState`) and that the registry does not know yet, recording
  /// it as a target of its own (`inherited_from`). Returns those adopted. A child that
  /// has already run `execve`, or changed since, is left alone.
  public func adoptForkedChildren(of parent: TargetID, among children: [Int32]) throws -> [TargetState] {
    try store.locked { session in
      guard let state = session.registry.target(parent), !state.hooks.isEmpty else { return [] }
      var adopted: [TargetState] = []
      for child in children {
        guard let process = try? TargetProcess.inspect(child), !process.isZombie,
          session.registry.target(process.id) == nil, holdsHooks(of: state, pid: child)
        else { continue }
        let copy = state.adopted(by: process.id, execID: RegistryStore.execIdentity(of: child))
        try session.save(copy)
        adopted.append(copy)
      }
      return adopted
    }
  }

  /// For a process the registry does not know: the registry entry of the patched
  /// process it was forked from, adopted as its own, when its memory holds every one of
  /// that entry's hooks exactly (entry jumps, slot cells, trampoline pages). Only a copy
  /// of the parent's memory does. The parent (`PPid`) is tried first.
  func inheritedState(_ id: TargetID, registry: RegistryState, execID: String?) -> TargetState? {
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
  /// stopped (the stop checks again, exactly, before the write). The bytes at `others`
  /// (hooks a plan removes, which write them back) come from the same read of the maps.
  func checkedObjectBytes(
    _ sites: [FunctionSite], alsoAt others: [UInt64] = [], process: TargetProcess
  ) throws -> [UInt64: [UInt8]] {
    let found = TargetProcess.objectBytes(pid: process.pid, at: sites.map(\.oldAddr) + others, count: 32)
    for site in sites {
      guard let file = found[site.oldAddr], file.count >= 4 else { continue }
      let entry = X86.jumpSite(functionAt: site.oldAddr, code: file)
      let covered = Int(entry - site.oldAddr) + X86.nearJumpLength
      let now = process.peek(at: site.oldAddr, count: min(covered, file.count))
      guard !now.isEmpty, now != Array(file.prefix(now.count)) else { continue }
      let at = Int(entry - site.oldAddr)
      throw PatchError.entryModified(
        function: site.name, address: entry, found: Array(now[at...]), file: Array(file[at..<now.count]),
        inherited: Transaction.isInheritedHook(Array(now[at...]), at: entry) {
          process.peek(at: $0, count: $1)
        })
    }
    return found
  }

  // MARK: The stop

  /// Stops every thread of the target, runs `body` in a transaction, and resumes; then
  /// persists the new state. Any failure in the stop rolls memory back first. The
  /// registry is written after the resume, so the target waits for none of it: the
  /// journal, made before the stop, gets the new state as its last line inside the
  /// stop, so a daemon killed between the resume and the save leaves the next one to
  /// record it (`recoverInterruptedOperations`); a save that fails puts the writes back.
  /// With a stack `check`, a thread inside what is switched away from that cannot be
  /// caught on return makes the attempt throw `StackBlocked` before anything is written;
  /// those that can are handed to `body`. A transition left pending is committed later
  /// by `finish`, so its journal stays.
  private func runStopped(
    pid: Int32, state: TargetState, session: RegistryStore.Session, options: OperationOptions,
    check: StackCheck? = nil, catching: Bool = false,
    _ body: @escaping (Transaction, StoppedTarget, [CatchPoint]) throws -> Executed
  ) throws -> (Executed, Duration) {
    let timeout = options.callTimeout
    let journal = try UndoJournal(state: store.state, target: state.id, generation: state.generation)
    let maps = state.pages.isEmpty ? nil : try? ProcessMaps.read(pid: pid)
    var kept = false
    defer { if !kept { journal.discard() } }
    let ((executed, writes), stopped) = try tracer.withStoppedMeasured(pid) { target in
      let transaction = Transaction(target: target, state: state, callTimeout: timeout)
      transaction.keepsPrologues = options.consistency == .entry
      transaction.journal = journal
      do {
        try transaction.checkPages(maps: maps)
        // A thread passing through a hook's slot has no unwind information there: sent on
        // to where the slot jumps (the version it was calling), its stack can be read.
        if check != nil { try transaction.moveThreadsOutOfSlots() }
        let points = try check?.catchPoints(in: target, allowed: catching) ?? []
        let executed = try body(transaction, target, points)
        if executed.transition == nil { try journal.record(commit: executed.next) }
        return (executed, transaction.writes)
      } catch {
        transaction.rollback()
        throw error
      }
    }
    guard executed.transition == nil else {
      kept = true
      return (executed, stopped)
    }
    do {
      try session.save(executed.next)
    } catch {
      // The target runs the result and the registry cannot say so: undo it.
      try? tracer.withStopped(pid) { target in try UndoJournal.putBack(writes, into: target) }
      throw error
    }
    return (executed, stopped)
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

  /// The `prev` variable `name` of a library: an 8-byte data object (a function
  /// pointer) the library defines; anything else is refused before the target is touched.
  private func prevVariable(_ name: String, in library: ElfFile, shownAs: String) throws -> ElfSymbol {
    let found = library.symbols(named: name)
    guard let symbol = found.first(where: { $0.kind == .object }) else {
      let reason = found.isEmpty ? "is not defined" : "is a function, not a function-pointer variable"
      throw PatchError.badPrev(name: name, library: shownAs, reason: reason)
    }
    guard symbol.size == 8 else {
      throw PatchError.badPrev(
        name: name, library: shownAs, reason: "is \(symbol.size) bytes, not a pointer's 8")
    }
    return symbol
  }

  /// Every pinned object must be loaded with exactly the pinned build id.
  private func checkBuildIDs(_ pins: [String: String], image: ProcessImage) throws {
    for (name, expected) in pins.sorted(by: { $0.key < $1.key }) {
      let loaded = image.objects(named: name)
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
  func checkRoom(_ symbol: ResolvedSymbol, process: TargetProcess) throws {
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

  func report(
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
