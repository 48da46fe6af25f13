import FoundationEssentials
import Glibc
import SwpatchProcess
import SwpatchRegistry
import SwpatchSymbols
import SwpatchX86

/// Everything one operation changes in a stopped target, with the undo log that puts
/// it back: memory writes (restored newest first), trampoline pages mapped, a library
/// loaded. Either `commit` is reached or `rollback` leaves the target as it was.
final class Transaction {
  let target: any TargetSession
  private var undo: [(address: UInt64, bytes: [UInt8])] = []
  /// Threads moved to another instruction, with where they were: put back first on
  /// rollback, before the code they were moved into is undone under them.
  private var moved: [(tid: Int32, rip: UInt64)] = []
  private var movedThreads: Set<Int32> = []
  /// How many threads this operation moved (for the report).
  var threadsMoved: Int { movedThreads.count }
  private var knownPages: [TrampolinePage]
  private var usedSlots: Set<UInt64>
  private(set) var newPages: [TrampolinePage] = []
  private(set) var loadedHandle: (handle: UInt64, dlclose: UInt64?, memfd: Int32, name: String)?
  /// How long a remote call (dlopen) may run before it is abandoned.
  let callTimeout: Duration
  /// The undo log on disk, for a successor if swpatch dies before the commit.
  var journal: UndoJournal?

  /// The hooks the target has, for the relocated prologues `prev` cells point to.
  private let hooks: [UInt64: Hook]
  /// Under `entry` consistency a call already running in a replacement that is taken
  /// off may still load its `prev` cell and call the relocated prologue after the stop
  /// (measured: 8 threads calling a wrapper took SIGTRAP in the freed slot within two
  /// disable/enable cycles). Such an operation keeps retired prologues in place, and a
  /// later hook of the same entry takes its kept copy again instead of a new slot.
  var keepsPrologues = false

  /// Every cell `execute` wrote (slot and `prev` cells), with what calls through it
  /// reached before and after (0 when nothing did): what a transition's gates route.
  private(set) var changedCells: [ChangedCell] = []
  /// Hook removals `execute` left for the end of a transition.
  private(set) var deferredRemovals: [(oldAddr: UInt64, install: HookInstall)] = []
  /// A transition page this transaction mapped, and the stack slots it redirected with
  /// what they held: put back on rollback (in the first stop, no thread has run since).
  var transitionPages: [UInt64] = []
  var redirected: [(slot: UInt64, value: UInt64)] = []

  /// The writes made so far, oldest first, as the journal records them.
  var writes: [UndoJournal.Entry] { undo.map { UndoJournal.Entry(address: $0.address, bytes: $0.bytes) } }

  init(target: any TargetSession, state: TargetState, callTimeout: Duration) {
    self.target = target
    self.knownPages = state.pages
    self.usedSlots = Set(
      state.hooks.values.flatMap { [$0.install.slotAddr, $0.install.prologueAddr].compactMap { $0 } })
    self.hooks = state.hooks
    self.callTimeout = callTimeout
  }

  // MARK: Memory with undo

  /// Writes `bytes` after saving what was there, so `rollback` can restore it.
  func write(_ bytes: [UInt8], at address: UInt64) throws {
    let previous = try target.read(at: address, count: bytes.count)
    try journal?.record(address: address, previous: previous)
    undo.append((address, previous))
    try target.write(bytes, at: address)
  }

  /// Undoes every write newest first, unmaps pages mapped by this transaction and
  /// unloads a library it loaded. Best effort: each step is tried even if one fails.
  func rollback() {
    for slot in redirected.reversed() {
      try? target.write(TrampolineSlot.cell(target: slot.value), at: slot.slot)
    }
    redirected = []
    for thread in moved.reversed() { try? target.setInstructionPointer(thread.rip, of: thread.tid) }
    moved = []
    for entry in undo.reversed() { try? target.write(entry.bytes, at: entry.address) }
    undo = []
    journal?.discard()
    if let loaded = loadedHandle, let dlclose = loaded.dlclose {
      try? target.dlclose(dlclose, handle: loaded.handle, timeout: callTimeout)
    }
    if let loaded = loadedHandle { try? target.close(fd: loaded.memfd) }
    loadedHandle = nil
    for page in newPages { target.forgetStub(in: page.base..<page.base + page.size) }
    for page in newPages { try? target.munmap(page.base, length: page.size) }
    newPages = []
    for page in transitionPages { try? target.munmap(page, length: TransitionPage.size) }
    transitionPages = []
  }

  // MARK: Trampoline pages and slots

  /// Refuses to go on unless every page the registry records still carries swpatch's
  /// header: an `int3` guard, then the hijack stub (or, in a page mapped by an older
  /// swpatch before the stub existed, `int3`), in an anonymous executable mapping. A
  /// page that fails was not ours any more (after `execve` the address may hold the
  /// new program's code), and writing a slot there would corrupt it.
  /// `maps` may be read before the stop (reading them costs a quarter of a millisecond
  /// here, which every held thread would wait for): what the page holds is still read
  /// in the stop, so a page unmapped or replaced meanwhile is refused all the same.
  func checkPages(maps known: [MapEntry]? = nil) throws {
    guard !knownPages.isEmpty else { return }
    let maps = try known ?? target.mappings()
    for page in knownPages {
      let mapping = maps.first { $0.start <= page.base && page.base < $0.end }
      guard let mapping, !mapping.isFileBacked, mapping.isExecutable,
        let header = try? target.read(at: page.base, count: Int(TrampolinePageLayout.firstSlotOffset)),
        Self.isOurHeader(header)
      else { throw PatchError.pageNotOurs(address: page.base) }
    }
  }

  /// Whether `header` (a page's bytes up to its first slot) is swpatch's.
  static func isOurHeader(_ header: [UInt8]) -> Bool {
    let stub =
      Int(TrampolinePageLayout.stubOffset)..<Int(TrampolinePageLayout.stubOffset) + HijackStub.bytes.count
    let int3 = X86.int3
    let rest = header.indices.filter { !stub.contains($0) }
    guard header.count == Int(TrampolinePageLayout.firstSlotOffset), rest.allSatisfy({ header[$0] == int3 })
    else { return false }
    return Array(header[stub]) == HijackStub.bytes || header[stub].allSatisfy { $0 == int3 }
  }

  /// Makes sure a trampoline page exists (mapping one near `address` if needed) and
  /// holds the `HijackStub` that remote calls return to.
  func ensureStub(near address: UInt64) throws {
    if target.hasHijackStub { return }
    let page = try (knownPages + newPages).first ?? mapPage(near: address)
    try installStub(in: page)
  }

  /// Writes the stub into a page's header (pages mapped before the stub existed hold
  /// int3 there) and tells the stopped target where it is. No undo entry: the header is
  /// swpatch's own and nothing but a remote call ever jumps there.
  private func installStub(in page: TrampolinePage) throws {
    precondition(
      UInt64(HijackStub.bytes.count) <= TrampolinePageLayout.stubRoom, "the stub overruns the slots")
    let stub = page.base + TrampolinePageLayout.stubOffset
    if try target.read(at: stub, count: HijackStub.bytes.count) != HijackStub.bytes {
      try target.write(HijackStub.bytes, at: stub)
    }
    try target.useStub(at: stub)
  }

  /// Each known page's bytes, read once per transaction: a slot no hook uses is free only
  /// if it is all `int3`, since a relocated prologue outlives its hook while a thread may
  /// still return into it.
  private var pageBytes: [UInt64: [UInt8]] = [:]

  private func isFree(_ slot: UInt64, in page: TrampolinePage) -> Bool {
    guard !usedSlots.contains(slot) else { return false }
    if pageBytes[page.base] == nil, !newPages.contains(page) {
      pageBytes[page.base] = (try? target.read(at: page.base, count: Int(page.size))) ?? []
    }
    guard let bytes = pageBytes[page.base], !bytes.isEmpty else { return true }
    let offset = Int(slot - page.base)
    return bytes[offset..<offset + Int(TrampolineSlot.size)].allSatisfy { $0 == X86.int3 }
  }

  /// A free slot reachable from `site` by `jmp rel32`, mapping a page near it if needed;
  /// `near == false` when no memory within ±2 GiB could be had.
  func allocateSlot(reachableFrom site: UInt64) throws -> (address: UInt64, near: Bool) {
    func free(in page: TrampolinePage) -> UInt64? {
      (0..<TrampolinePageLayout.slotCount).lazy
        .map { TrampolinePageLayout.slotAddress(page: page.base, index: $0) }
        .first { self.isFree($0, in: page) }
    }
    for page in knownPages + newPages {
      if let slot = free(in: page), X86.nearJump(from: site, to: slot) != nil {
        usedSlots.insert(slot)
        return (slot, true)
      }
    }
    // Only a lack of room in reach sends the slot far away (and the entry to a 14-byte
    // jump): any other failure (a write into the target) fails the operation, which is
    // rolled back, rather than leave a half-made page behind in the registry.
    do {
      let page = try mapPage(near: site)
      if let slot = free(in: page) {
        usedSlots.insert(slot)
        return (slot, true)
      }
    } catch PatchError.noMemoryNearby {}
    let far = try mapPage(near: nil)
    let slot = free(in: far)!
    usedSlots.insert(slot)
    return (slot, false)
  }

  /// Maps one executable page with a remote mmap, as close to `near` as the address
  /// space allows (MAP_FIXED_NOREPLACE on the gaps of /proc/PID/maps), filled with int3.
  private func mapPage(near: UInt64?) throws -> TrampolinePage {
    let size = TrampolinePageLayout.size
    var hints: [UInt64] = []
    if let near {
      let maps = try target.mappings()
      let reach: UInt64 = (1 << 31) - 2 * size
      let low = near > reach ? near - reach : 0
      let high = near + reach
      for gap in ProcessMaps.gaps(in: maps) where gap.upperBound - gap.lowerBound >= size {
        let lo = max(gap.lowerBound, low)
        let hi = min(gap.upperBound - size, high)
        guard lo <= hi else { continue }
        let wanted = near & ~(size - 1)
        let hint = min(max(wanted, (lo + size - 1) & ~(size - 1)), hi & ~(size - 1))
        if hint >= lo { hints.append(hint) }
      }
      hints.sort { distance($0, near) < distance($1, near) }
      hints = Array(hints.prefix(8))
      guard !hints.isEmpty else { throw PatchError.noMemoryNearby(address: near) }
    } else {
      hints = [0]
    }
    for hint in hints {
      guard let base = try map(size, at: hint == 0 ? nil : hint) else { continue }
      let page = TrampolinePage(base: base, size: size)
      newPages.append(page)
      // A fresh mapping holds no data worth undoing: write without an undo entry. Every
      // page carries the stub in its header, which is also how a page is later known
      // to still be ours (`checkPages`).
      var fresh = TrampolinePageLayout.freshBytes()
      fresh.replaceSubrange(
        Int(TrampolinePageLayout.stubOffset)..<Int(TrampolinePageLayout.stubOffset) + HijackStub.bytes.count,
        with: HijackStub.bytes)
      try target.write(fresh, at: base)
      if !target.hasHijackStub { try target.useStub(at: base + TrampolinePageLayout.stubOffset) }
      return page
    }
    throw near.map { PatchError.noMemoryNearby(address: $0) } ?? PatchError.mmapFailed
  }

  /// One executable mapping at `hint` (anywhere when nil); nil when that spot is taken,
  /// the kernel ignored the hint, or the kernel refused the mmap: the next hint is tried.
  private func map(_ size: UInt64, at hint: UInt64?) throws(ProcessError) -> UInt64? {
    do {
      return try target.mmap(at: hint, length: size, executable: true)
    } catch {
      if case .remoteSyscallFailed = error { return nil }
      throw error
    }
  }

  private func distance(_ a: UInt64, _ b: UInt64) -> UInt64 { a > b ? a - b : b - a }

  // MARK: Libraries

  /// Loads `library` into the target, unless it is mapped there already, and returns
  /// its load bias and dlopen handle (0 when it was already mapped).
  ///
  /// The bytes go through a memfd made in the target and filled by us, then
  /// `dlopen("/proc/self/fd/N")` runs on the target's main thread: the target gets
  /// exactly the bytes that were validated (not whatever the path holds now), and a
  /// target in another mount namespace (a container) needs no copy of the file. The
  /// memfd stays open while the library is loaded: glibc knows loaded objects by their
  /// path name, so a later library must not get the same /proc/self/fd/N.
  ///
  /// `edits` rewrite the copy the target loads (`ExternBindings`: references to the
  /// target's own functions and variables bound to their addresses); the store's copy
  /// is never changed.
  func loadLibrary(
    _ library: StoredLibrary, elf: ElfFile, image: ProcessImage, near: UInt64, edits: [FileEdit] = []
  ) throws -> (bias: UInt64, handle: UInt64, loadedNow: Bool) {
    if let object = alreadyMapped(library, edits: edits, image: image) { return (object.loadBias, 0, false) }
    let dlopen = try loaderFunction("dlopen", in: image)
    try ensureStub(near: near)
    let fd = try memfd(holding: library, edits: edits)
    func closeMemfd() { try? target.close(fd: fd) }
    let identity: FileIdentity
    let handle: UInt64?
    do {
      identity = try target.identity(ofDescriptor: fd)
    } catch {
      closeMemfd()
      throw Self.missing(error)
    }
    // The other threads run meanwhile: one that holds a lock dlopen needs can release it,
    // and none is stopped for the length of a library's constructors.
    try target.releaseOthers(except: target.mainThread)
    do {
      handle = try target.dlopen(dlopen, descriptor: fd, timeout: callTimeout)
    } catch {
      try? target.holdReleasedAgain()
      threadsHaveRun()
      closeMemfd()
      throw error
    }
    try target.holdReleasedAgain()
    threadsHaveRun()
    guard let handle else {
      // dlerror names the file it was given, the target's view of our memfd: say which
      // library that is instead, as the operator knows it.
      let reason = Self.naming(dlerror(image: image), descriptor: fd, as: library.originalPath)
      closeMemfd()
      throw PatchError.dlopenFailed(path: library.originalPath, reason: reason)
    }
    loadedHandle = (handle, try? loaderFunction("dlclose", in: image), fd, Self.memfdName(library))
    // The bias comes from the library's first mapping alone: re-reading every object of
    // the process here would keep the target stopped for milliseconds more.
    let mapped = try target.mappings()
      .filter { $0.device == identity.device && $0.inode == identity.inode }
    guard let first = mapped.min(by: { $0.start < $1.start }) else {
      throw PatchError.dlopenFailed(
        path: library.originalPath, reason: "the library is not mapped after dlopen")
    }
    return (elf.loadBias(mappedAt: first.start, offset: first.offset), handle, true)
  }

  /// `message` with the paths the target saw the library under (its descriptor's, see
  /// `StoppedTarget.pathsOf(descriptor:)`) replaced by `path`.
  static func naming(_ message: String, descriptor fd: Int32, as path: String) -> String {
    StoppedTarget.pathsOf(descriptor: fd).reduce(message) {
      $0.replacing($1, with: path)
    }
  }

  /// A descriptor whose file cannot be stat'ed reads as a missing library, as it did
  /// when the patcher stat'ed /proc/PID/fd/N itself.
  private static func missing(_ error: ProcessError) -> any Error {
    if case .io(let path, _) = error { return PatchError.libraryMissing(path: path) }
    return error
  }

  /// The library's own file mapped by the program (it links it), or a memfd of ours
  /// with the same content (and the same bindings) from an earlier attach.
  private func alreadyMapped(_ library: StoredLibrary, edits: [FileEdit], image: ProcessImage)
    -> LoadedObject?
  {
    if let identity = FileIdentity.of(path: library.originalPath),
      let object = image.object(device: identity.device, inode: identity.inode)
    {
      return object
    }
    // Maps show a memfd as "/memfd:NAME (deleted)".
    let tag = "/memfd:" + Self.memfdName(library, edits: edits)
    return image.objects.first { $0.path == tag || $0.path.hasPrefix(tag + " ") }
  }

  /// What the name of every memfd of ours starts with.
  static let memfdPrefix = "swpatch-"

  /// `swpatch-` and the first 16 hex digits of the SHA-256, then, for a copy whose
  /// references swpatch bound, 8 hex digits of a hash of those edits: the name the
  /// target's maps show for the library, so the same content is recognised later.
  static func memfdName(_ library: StoredLibrary, edits: [FileEdit] = []) -> String {
    let name = memfdPrefix + library.sha256.prefix(16)
    guard !edits.isEmpty else { return name }
    var hash: UInt64 = 0xcbf2_9ce4_8422_2325  // FNV-1a
    for edit in edits {
      for byte in withUnsafeBytes(of: edit.offset.littleEndian, Array.init) + edit.bytes {
        hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3
      }
    }
    return name + "-" + String(hash >> 32, radix: 16).leftPadded(to: 8)
  }

  /// A memfd created in the target (close-on-exec) holding the library's bytes, with
  /// `edits` written over them.
  private func memfd(holding library: StoredLibrary, edits: [FileEdit]) throws -> Int32 {
    let fd: Int32
    do {
      fd = try target.memfdCreate(name: Self.memfdName(library, edits: edits))
    } catch {
      throw Self.loadFailure(error, library: library, step: "memfd_create in the target failed: ")
    }
    do {
      try target.copy(file: library.path, intoDescriptor: fd, chunkSize: LibraryStore.chunkSize)
      try target.write(edits.map { ($0.offset, $0.bytes) }, intoDescriptor: fd)
    } catch {
      try? target.close(fd: fd)
      throw Self.loadFailure(error, library: library)
    }
    return fd
  }

  /// How a failed step of loading a library is reported: a refused system call (or a
  /// write into the memfd) fails the load and says why; losing the target is itself.
  private static func loadFailure(_ error: ProcessError, library: StoredLibrary, step: String = "")
    -> any Error
  {
    switch error {
    case .remoteSyscallFailed(_, let errno):
      return PatchError.dlopenFailed(
        path: library.originalPath, reason: step + String(cString: strerror(errno.rawValue)))
    case .io(_, let errno):
      return PatchError.dlopenFailed(path: library.originalPath, reason: "\(errno)")
    default:
      return step.isEmpty ? PatchError.dlopenFailed(path: library.originalPath, reason: "\(error)") : error
    }
  }

  /// dlerror()'s text after a failed dlopen.
  private func dlerror(image: ProcessImage) -> String {
    guard let dlerror = try? loaderFunction("dlerror", in: image),
      let text = try? target.dlerror(dlerror, timeout: callTimeout)
    else { return "unknown reason" }
    return text
  }

  /// dlopen and friends live in libc.so.6 since glibc 2.34 (libdl before that).
  private func loaderFunction(_ name: String, in image: ProcessImage) throws -> UInt64 {
    try Self.loaderFunction(name, in: image)
  }

  static func loaderFunction(_ name: String, in image: ProcessImage) throws -> UInt64 {
    for object in ["libc.so.6", "libdl.so.2"] {
      if let symbol = image.candidates(name, in: object).first { return symbol.address }
    }
    if let symbol = image.candidates(name).first { return symbol.address }
    throw PatchError.noLoader(function: name)
  }

  // MARK: Plan effects

  /// Carries out a registry plan, in order. Returns the install facts of new hooks.
  /// `objectBytes` holds, by old address, the object file's bytes from the function's
  /// first byte (see `TargetProcess.objectBytes`): what a new hook must find there and
  /// records as the original, and what a removed hook writes back.
  ///
  /// `underTransition`: the cells will go through gates (`beginTransition`), so no cell
  /// switches here: a new hook's slot points at its relocated prologue (the original),
  /// other cells keep their value, and removals wait. A swpatch killed before the gates
  /// are written thus leaves nothing switched (measured before: 2.3 million mixed calls
  /// in one killed round), and the next daemon's put-back finds the old versions running.
  func execute(
    _ plan: Plan, sizes: [UInt64: UInt64], objectBytes: [UInt64: [UInt8]] = [:],
    underTransition: Bool = false
  ) throws -> [UInt64: HookInstall] {
    try moveThreadsOutOfEntries(plan, sizes: sizes)
    var installs: [UInt64: HookInstall] = [:]
    for effect in plan.effects {
      switch effect {
      case .installHook(let site, let replacement):
        let install = try installHook(
          site, pointingTo: replacement, size: sizes[site.oldAddr] ?? 0, file: objectBytes[site.oldAddr],
          holding: underTransition)
        installs[site.oldAddr] = install
        changedCells.append(
          ChangedCell(cell: install.cellAddr, old: install.prologueAddr ?? 0, new: replacement))
      case .setSlot(let oldAddr, let cell, let from, let to):
        let current = try target.read(at: cell, count: 8)
        guard current == TrampolineSlot.cell(target: from) else {
          throw PatchError.drift(oldAddr: oldAddr, detail: "slot cell does not hold the expected replacement")
        }
        // One aligned 8-byte store: the function switches versions with no window.
        if !underTransition { try write(TrampolineSlot.cell(target: to), at: cell) }
        changedCells.append(ChangedCell(cell: cell, old: from, new: to))
      case .removeHook(let oldAddr, let install):
        guard underTransition else {
          try removeHook(oldAddr, install, file: objectBytes[oldAddr])
          continue
        }
        let current = TrampolineSlot.target(ofCell: try target.read(at: install.cellAddr, count: 8))
        deferredRemovals.append((oldAddr, install))
        changedCells.append(ChangedCell(cell: install.cellAddr, old: current, new: install.prologueAddr ?? 0))
      case .setPrev(let oldAddr, let cell, let to):
        let before = TrampolineSlot.target(ofCell: try target.read(at: cell, count: 8))
        let value = try address(of: to, at: oldAddr, installs: installs)
        // A cell still null belongs to a replacement no thread has run yet: nothing to
        // gate, nobody to switch.
        if !underTransition || before == 0 { try write(TrampolineSlot.cell(target: value), at: cell) }
        if before != 0 { changedCells.append(ChangedCell(cell: cell, old: before, new: value)) }
      }
    }
    return installs
  }

  /// Takes a hook out: the object file's bytes back at the entry, the slot freed, the
  /// relocated prologue retired; a thread in the slot goes where the cell points.
  func removeHook(_ oldAddr: UInt64, _ install: HookInstall, file: [UInt8]?) throws {
    let current = try target.read(at: install.entryAddr, count: install.jumpBytes.count)
    guard current == install.jumpBytes else {
      throw PatchError.drift(oldAddr: oldAddr, detail: "entry does not hold swpatch's jump")
    }
    try moveThreadsOutOfSlot(install)
    // The object file's bytes, not only those recorded at install: a registry written
    // before this check existed may have recorded a jump inherited from a parent.
    let original =
      Self.slice(file, from: oldAddr, at: install.entryAddr, count: install.originalBytes.count)
      ?? install.originalBytes
    try write(original, at: install.entryAddr)
    try write(TrampolineSlot.freed, at: install.slotAddr)
    try retirePrologue(install, of: oldAddr, file: file)
  }

  /// The address a `prev` cell gets: a replacement's, or the original function's
  /// relocated prologue, which runs the overwritten instructions and jumps back into it.
  private func address(of target: PrevTarget, at oldAddr: UInt64, installs: [UInt64: HookInstall]) throws
    -> UInt64
  {
    switch target {
    case .replacement(let address):
      return address
    case .original:
      let install = installs[oldAddr] ?? hooks[oldAddr]?.install
      guard let prologue = install?.prologueAddr else {
        throw PatchError.originalNotCallable(
          function: hooks[oldAddr]?.site.name ?? "the function", address: oldAddr)
      }
      return prologue
    }
  }

  /// Where each stopped thread will resume.
  private func threadPositions() throws -> [(tid: Int32, rip: UInt64)] {
    try target.threads.map { ($0, try target.instructionPointer(of: $0)) }
  }

  /// Before anything is written, lets every thread that would resume inside the bytes
  /// an entry jump may cover (past their first byte, up to the 14-byte absolute jump)
  /// run until it is out; a thread that stays inside refuses the operation with nothing
  /// changed.
  private func moveThreadsOutOfEntries(_ plan: Plan, sizes: [UInt64: UInt64]) throws {
    var ranges: [Range<UInt64>] = []
    for case .installHook(let site, _) in plan.effects {
      let code = try target.read(at: site.oldAddr, count: 16)
      let entry = X86.jumpSite(functionAt: site.oldAddr, code: code)
      let room = (sizes[site.oldAddr] ?? 0) &- (entry - site.oldAddr)
      let covered = min(max(room, UInt64(X86.nearJumpLength)), UInt64(X86.absoluteJumpLength))
      // A thread inside bytes that can be relocated is moved into the relocated copy
      // when the hook goes in (`installHook`): no waiting, no single-stepping.
      let movable = try? Relocator.relocate(
        target.read(at: entry, count: Int(covered) + 16), from: entry, to: entry, covering: Int(covered))
      if movable == nil { ranges.append(entry..<entry + covered) }
    }
    guard !ranges.isEmpty else { return }
    defer { threadsHaveRun() }
    if let thread = try target.runThreadsOut(of: ranges, attempts: 12).first {
      throw PatchError.threadInRewrittenBytes(tid: thread.tid, address: thread.rip)
    }
  }

  /// A thread resuming in the middle of an instruction we overwrite would execute
  /// garbage; at the first byte it simply takes the new jump. (The last check before
  /// the write; `moveThreadsOutOfEntries` has already moved threads out.)
  private func refuseThreadsInside(_ bytes: Range<UInt64>) throws {
    if let thread = try target.threadsInside([bytes]).first {
      throw PatchError.threadInRewrittenBytes(tid: thread.tid, address: thread.rip)
    }
  }

  /// Every thread stopped inside a hook's slot (its `endbr64` or its `jmp`) is sent on
  /// to where the slot jumps: no thread's behaviour changes, and each stack can then be
  /// unwound (a slot has no CFI). Put back on rollback.
  func moveThreadsOutOfSlots() throws {
    for hook in hooks.values { try moveThreadsOutOfSlot(hook.install) }
  }

  /// A thread stopped inside a slot that is about to become int3 padding is moved to
  /// where the slot would have sent it: the replacement its cell points to.
  private func moveThreadsOutOfSlot(_ install: HookInstall) throws {
    let slot = install.slotAddr..<install.slotAddr + TrampolineSlot.size
    for thread in try threadPositions() where slot.contains(thread.rip) {
      let cell = try target.read(at: install.cellAddr, count: 8)
      try move(thread.tid, from: thread.rip, to: TrampolineSlot.target(ofCell: cell))
    }
  }

  /// The other threads ran (during `dlopen`, or in slices out of an entry): each moved
  /// thread has gone on from where it was sent, with its stack changed since, so setting
  /// its old instruction pointer back would run that code on the wrong stack (measured:
  /// a SIGSEGV at 16 threads when the stack check after a `dlopen` rolled back an
  /// attach). Every move so far only sent a thread where its code would have gone, so
  /// it needs no undoing.
  private func threadsHaveRun() { moved = [] }

  /// Sets a stopped thread's instruction pointer, remembering where it was for rollback.
  private func move(_ tid: Int32, from rip: UInt64, to address: UInt64) throws {
    moved.append((tid, rip))
    movedThreads.insert(tid)
    try target.setInstructionPointer(address, of: tid)
  }

  /// The instructions an entry jump of `count` bytes at `entry` overwrites, relocated to
  /// run at `address` (from the object file's bytes when they are known, else memory);
  /// nil when they cannot be moved or do not fit a slot.
  private func relocatedPrologue(
    of oldAddr: UInt64, entry: UInt64, count: Int, file: [UInt8]?, at address: UInt64
  ) -> RelocatedPrologue? {
    let offset = Int(entry - oldAddr)
    let code =
      file.map { Array($0.dropFirst(offset)) } ?? (try? target.read(at: entry, count: 24)) ?? []
    guard let copy = try? Relocator.relocate(code, from: entry, to: address, covering: count),
      copy.bytes.count <= Int(TrampolineSlot.size)
    else { return nil }
    return copy
  }

  /// Writes the relocated copy of what the jump will overwrite into a slot of its own,
  /// and moves every thread stopped inside those bytes to the same point in the copy,
  /// which then continues into the rest of the function. Returns the copy's address, or
  /// nil when the instructions cannot be moved (then `refuseThreadsInside` decides).
  private func installPrologue(
    _ site: FunctionSite, entry: UInt64, jump: [UInt8], file: [UInt8]?
  ) throws -> UInt64? {
    if let kept = keptPrologue(of: site.oldAddr, entry: entry, count: jump.count, file: file) {
      try moveThreads(inside: entry, count: jump.count, into: kept)
      return kept.address
    }
    let area = try allocateSlot(reachableFrom: entry)
    guard
      let copy = relocatedPrologue(
        of: site.oldAddr, entry: entry, count: jump.count, file: file, at: area.address)
    else {
      usedSlots.remove(area.address)
      return nil
    }
    let padding = [UInt8](repeating: X86.int3, count: Int(TrampolineSlot.size) - copy.bytes.count)
    try write(copy.bytes + padding, at: area.address)
    try moveThreads(inside: entry, count: jump.count, into: copy)
    return area.address
  }

  private func moveThreads(inside entry: UInt64, count: Int, into copy: RelocatedPrologue) throws {
    for thread in try target.threadsInside([entry..<entry + UInt64(count)]) {
      if let pc = copy.relocatedPC(for: thread.rip, originalAt: entry) {
        try move(thread.tid, from: thread.rip, to: pc)
      }
    }
  }

  /// A relocated prologue of this entry that an earlier operation kept in place (see
  /// `keepsPrologues`): a slot no hook uses that holds exactly the copy relocated to it.
  private func keptPrologue(of oldAddr: UInt64, entry: UInt64, count: Int, file: [UInt8]?)
    -> RelocatedPrologue?
  {
    for page in knownPages {
      if pageBytes[page.base] == nil {
        pageBytes[page.base] = (try? target.read(at: page.base, count: Int(page.size))) ?? []
      }
      guard let bytes = pageBytes[page.base], bytes.count == Int(page.size) else { continue }
      for index in 0..<TrampolinePageLayout.slotCount {
        let slot = TrampolinePageLayout.slotAddress(page: page.base, index: index)
        let offset = Int(slot - page.base)
        let held = bytes[offset..<offset + Int(TrampolineSlot.size)]
        guard !usedSlots.contains(slot), held.first != X86.int3,
          let copy = relocatedPrologue(of: oldAddr, entry: entry, count: count, file: file, at: slot),
          held.elementsEqual(
            copy.bytes + [UInt8](repeating: X86.int3, count: Int(TrampolineSlot.size) - copy.bytes.count))
        else { continue }
        usedSlots.insert(slot)
        return copy
      }
    }
    return nil
  }

  /// When a hook goes, its relocated prologue goes too, unless a thread may still need
  /// it: a thread stopped in it is moved back to the same point of the original code
  /// (restored in the same stop); one stopped where no such point exists, or a copy
  /// with a call in it (whose return address may be on some stack), keeps it in place,
  /// unused but never reused (a slot is free only when all `int3`).
  private func retirePrologue(_ install: HookInstall, of oldAddr: UInt64, file: [UInt8]?) throws {
    guard let address = install.prologueAddr else { return }
    guard
      let copy = relocatedPrologue(
        of: oldAddr, entry: install.entryAddr, count: install.jumpBytes.count, file: file, at: address),
      !copy.hasCall
    else { return }
    let inside = address..<address + UInt64(copy.bytes.count)
    for thread in try threadPositions() where inside.contains(thread.rip) {
      // At the copy's first byte a thread is a call of the original already made (a
      // replacement's prev); moved to the entry, it would take the entry's jump again
      // if a hook returns before it runs, and run the replacement twice (measured: a
      // wrapper's `prev(x) + 1000` gave 2049). A kept copy is valid code: it stays there.
      if keepsPrologues && thread.rip == address { continue }
      guard let pc = copy.originalPC(for: thread.rip, originalAt: install.entryAddr) else { return }
      try move(thread.tid, from: thread.rip, to: pc)
    }
    // Kept but idle: threads stopped in it went back to the original all the same.
    if keepsPrologues { return }
    try write(TrampolineSlot.freed, at: address)
  }

  /// `count` bytes at `address` out of `bytes`, which start at `start`; nil when they
  /// are not all there.
  static func slice(_ bytes: [UInt8]?, from start: UInt64, at address: UInt64, count: Int) -> [UInt8]? {
    guard let bytes, address >= start, Int(address - start) + count <= bytes.count else { return nil }
    return Array(bytes[Int(address - start)..<Int(address - start) + count])
  }

  /// Fills a slot pointing at `replacement`, then writes the entry jump to it. The slot
  /// is complete before the jump exists, so no thread can ever reach a half-made slot.
  private func installHook(
    _ site: FunctionSite, pointingTo replacement: UInt64, size: UInt64, file: [UInt8]?, holding: Bool = false
  ) throws -> HookInstall {
    let code = try target.read(at: site.oldAddr, count: 16)
    let entry = X86.jumpSite(functionAt: site.oldAddr, code: code)
    let offset = entry - site.oldAddr
    guard size >= offset + UInt64(X86.nearJumpLength) else {
      throw PatchError.tooShort(
        function: site.name, size: size, needed: offset + UInt64(X86.nearJumpLength))
    }
    let room = size - offset
    let slot = try allocateSlot(reachableFrom: entry)
    let jump: [UInt8]
    if slot.near, let near = X86.nearJump(from: entry, to: slot.address) {
      jump = near
    } else if room >= UInt64(X86.absoluteJumpLength) {
      jump = X86.absoluteJump(to: slot.address)
    } else {
      throw PatchError.noMemoryNearby(address: site.oldAddr)
    }
    let original = try target.read(at: entry, count: jump.count)
    // Never record as "original" bytes that are not the object's: a jump inherited from
    // a patched parent, a debugger's breakpoint. Restoring them later would leave the
    // function patched, or broken, while swpatch reported it restored. Checked before
    // anything of this hook is written.
    if let expected = Self.slice(file, from: site.oldAddr, at: entry, count: jump.count), expected != original
    {
      throw PatchError.entryModified(
        function: site.name, address: entry, found: original, file: expected,
        inherited: Self.isInheritedHook(original, at: entry) {
          (try? self.target.read(at: $0, count: $1)) ?? []
        })
    }
    let prologue = try installPrologue(site, entry: entry, jump: jump, file: file)
    try refuseThreadsInside(entry..<entry + UInt64(jump.count))
    // Held for a transition: the slot first leads to the original, until its gate.
    let first = holding ? (prologue ?? replacement) : replacement
    try write(TrampolineSlot.bytes(target: first), at: slot.address)
    try write(jump, at: entry)
    return HookInstall(
      slotAddr: slot.address, cellAddr: slot.address + TrampolineSlot.cellOffset, entryAddr: entry,
      originalBytes: original, jumpBytes: jump, prologueAddr: prologue)
  }
}

extension Transaction {
  /// Whether `bytes` at `entry` are a hook's jump (rel32, or swpatch's absolute form)
  /// into a page with swpatch's header, as `read` shows memory: a hook inherited from
  /// a patched parent, as opposed to another tool's change.
  static func isInheritedHook(_ bytes: [UInt8], at entry: UInt64, read: (UInt64, Int) -> [UInt8]) -> Bool {
    let destination: UInt64
    if bytes.count >= X86.absoluteJumpLength, bytes.starts(with: X86.absoluteJump(to: 0).prefix(6)) {
      destination = bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 6, as: UInt64.self) }
    } else if bytes.first == 0xe9, let jump = BranchScan.directBranches(in: bytes, at: entry).first {
      destination = jump.to
    } else {
      return false
    }
    let page = destination & ~(TrampolinePageLayout.size - 1)
    return isOurHeader(read(page, Int(TrampolinePageLayout.firstSlotOffset)))
  }
}

extension String {
  /// Zeros in front, to `width` characters.
  fileprivate func leftPadded(to width: Int) -> String {
    String(repeating: "0", count: max(0, width - count)) + self
  }
}
