import FoundationEssentials
import Glibc
import SwpatchBase
import SwpatchProcess
import SwpatchProtocol
import SwpatchRegistry
import SwpatchSymbols
import SwpatchX86

/// A library `remove` unloads: where it is mapped and the frames that keep it.
struct LibraryToUnload {
  let library: LoadedLibrary
  /// Every mapping of the library's file (its memfd).
  let mappings: [MapEntry]
  var ranges: [Range<UInt64>] { mappings.map { $0.start..<$0.end } }
  var identity: FileIdentity { FileIdentity(device: mappings[0].device, inode: mappings[0].inode) }
}

extension Engine {
  /// Takes a disabled patch out of `pid` for good: its entries leave the registry, and
  /// the library loaded for it is unloaded (`dlclose` in the target, then the memfd
  /// closed) once no thread has a frame in any of its mappings, retried as `--retry-for`
  /// allows. A library another patch uses, or that a `prev` cell of another patch
  /// points into, stays loaded and the report says why.
  public func remove(pid: Int32, patchID: String, options: OperationOptions = .init()) throws
    -> OperationReport
  {
    try failingAsExited(pid) {
      try retryingWhileBlocked(options) { try removeOnce(pid: pid, patchID: patchID, options: options) }
    }
  }

  private func removeOnce(pid: Int32, patchID: String, options: OperationOptions) throws -> OperationReport {
    let process = try TargetProcess.inspect(pid)
    return try store.locked { session in
      guard let state = knownOrInherited(process, registry: session.registry) else {
        throw PatchError.notPatched(pid: pid)
      }
      let removal = try state.planRemove(patchID)
      let steps =
        ["forget \(patchID) (disabled; \(removal.patch.functions.count) functions)"]
        + removal.unload.map {
          "unload \($0.path) (dlclose handle \(hexAddress($0.handle)), close its memfd) once no thread is in its code"
        }
      func report(dryRun: Bool, stopped: Duration, notes: [String]) -> OperationReport {
        OperationReport(
          pid: pid, operation: "remove", patch: patchID, dryRun: dryRun, policy: state.policy.rawValue,
          functions: removal.patch.functions.map {
            .init(
              function: $0.site.name, object: $0.site.object, oldAddr: Address($0.site.oldAddr),
              replacement: $0.replacement, address: Address($0.replacementAddr))
          }, plan: steps, alsoDisabled: [], stoppedMicroseconds: stopped.microseconds, notes: notes)
      }
      if options.dryRun || removal.unload.isEmpty {
        let next = try state.removing(removal, unloaded: [])
        if !options.dryRun { try session.save(next) }
        return report(dryRun: options.dryRun, stopped: .zero, notes: removal.kept)
      }
      try process.checkPatchable()
      let image = try ProcessImage(pid: pid)
      let others = state.patches.filter { $0.id != patchID }
      let timeout = options.callTimeout
      let (notes, stopped) = try tracer.withStoppedMeasured(pid) { target in
        let (unloaded, notes) = try Self.unload(
          removal, others: others, pages: state.pages, image: image, in: target, timeout: timeout)
        // Saved while the target is still held, as every operation's commit is.
        try session.save(state.removing(removal, unloaded: unloaded))
        return notes
      }
      discardStoredCopy(of: removal.patch, registry: try store.snapshot())
      return report(dryRun: false, stopped: stopped, notes: removal.kept + notes)
    }
  }

  /// Removes the store's copy of a removed patch's library when no patch of any target
  /// still names that content.
  private func discardStoredCopy(of patch: Patch, registry: RegistryState) {
    guard let sha256 = patch.sha256,
      !registry.targets.contains(where: { target in
        target.patches.contains { $0.sha256 == sha256 } || target.libraries.contains { $0.sha256 == sha256 }
      })
    else { return }
    libraries.discard(sha256: sha256)
  }

  /// Inside the stop: finds each library's mappings, refuses (`StackBlocked`) while a
  /// thread has a frame in one, keeps a library a `prev` cell of `others` points into,
  /// then unloads the rest. Returns the libraries unloaded and what the report says.
  static func unload(
    _ removal: Removal, others: [Patch], pages: [TrampolinePage], image: ProcessImage,
    in target: StoppedTarget, timeout: Duration
  ) throws -> (unloaded: [LoadedLibrary], notes: [String]) {
    var notes: [String] = []
    var candidates: [LibraryToUnload] = []
    let maps = try target.mappings()
    for library in removal.unload {
      // A dlopen handle is glibc's link_map, whose first word is the load bias: where
      // the library's first mapping starts.
      let bias = (try? target.read(at: library.handle, count: 8)).map(X86.word)
      guard let bias, let first = maps.first(where: { $0.start == bias && isOurMemfd($0) }) else {
        notes.append(
          "library \(library.path) stays listed: handle \(hexAddress(library.handle)) no longer names a library of ours"
        )
        continue
      }
      candidates.append(
        LibraryToUnload(
          library: library, mappings: maps.filter { $0.device == first.device && $0.inode == first.inode }))
    }
    // A prev cell is the one pointer into a patch library that swpatch writes outside a
    // func stack; one of a remaining patch that points into it keeps the library.
    candidates.removeAll { candidate in
      for patch in others {
        for function in patch.functions {
          guard let cell = function.prevCell, let bytes = try? target.read(at: cell, count: 8) else {
            continue
          }
          let value = TrampolineSlot.target(ofCell: bytes)
          if candidate.ranges.contains(where: { $0.contains(value) }) {
            notes.append(
              "library \(candidate.library.path) stays loaded: the prev cell of patch '\(patch.id)'"
                + " (\(function.replacement), \(hexAddress(cell))) points into it (\(hexAddress(value)))")
            return true
          }
        }
      }
      return false
    }
    guard !candidates.isEmpty else { return ([], notes) }
    if let blocker = try threadInside(candidates.flatMap(\.ranges), image: image, target: target) {
      throw StackBlocked(blocker: blocker)
    }
    let dlclose = try Transaction.loaderFunction("dlclose", in: image)
    Transaction.useStub(in: pages, of: target)
    var unloaded: [LoadedLibrary] = []
    for candidate in candidates {
      // glibc knows loaded objects by path (/proc/self/fd/N): find the memfd before
      // dlclose and close it only once the library is gone, so that no later library
      // can be taken for one still loaded under the same name.
      let descriptors = try target.descriptors(of: candidate.identity)
      // The other threads run meanwhile, as for dlopen: one may hold the loader's lock.
      try target.releaseOthers(except: target.mainThread)
      do {
        try target.dlclose(dlclose, handle: candidate.library.handle, timeout: timeout)
      } catch {
        try? target.holdReleasedAgain()
        throw error
      }
      try target.holdReleasedAgain()
      let still = try target.mappings().contains {
        $0.device == candidate.identity.device && $0.inode == candidate.identity.inode
      }
      if still {
        notes.append(
          "library \(candidate.library.path) is still mapped after dlclose (something else holds it open); it stays listed"
        )
        continue
      }
      for fd in descriptors { try target.close(fd: fd) }
      unloaded.append(candidate.library)
    }
    return (unloaded, notes)
  }

  private static func isOurMemfd(_ entry: MapEntry) -> Bool {
    entry.path.hasPrefix("/memfd:" + Transaction.memfdPrefix)
  }

  /// The first thread with a frame inside `ranges` (innermost first), or one whose
  /// stack cannot be read past its first frame (it proves nothing), as the stack check
  /// of `--consistency stack` names them.
  static func threadInside(_ ranges: [Range<UInt64>], image: ProcessImage, target: StoppedTarget) throws
    -> BlockingThread?
  {
    let stacks = try StackUnwinder.stacks(of: target)
    for stack in stacks {
      for frame in stack.frames where ranges.contains(where: { $0.contains(frame.address) }) {
        let name = image.function(containing: frame.address).map(\.name) ?? "the library's code"
        return .inside(tid: stack.tid, function: name, frame: frame)
      }
    }
    for stack in stacks where stack.frames.count <= 1 {
      if let reason = stack.stoppedEarly ?? (stack.frames.isEmpty ? "no frames" : nil) {
        return .unreadable(tid: stack.tid, reason: reason)
      }
    }
    return nil
  }
}
