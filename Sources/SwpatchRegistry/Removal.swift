import SwpatchBase

/// What `remove` decides for a disabled patch: it leaves the registry, and the libraries
/// loaded for it that no other patch uses are candidates to unload (the patcher unloads
/// them only once no thread can be in their code). Pure: decided without touching the
/// target.
public struct Removal: Equatable, Sendable {
  public var target: TargetID
  /// The state's generation when decided; committing a stale removal is refused.
  public var generation: UInt64
  public var patch: Patch
  /// Libraries loaded for this patch that no remaining patch uses.
  public var unload: [LoadedLibrary]
  /// Why a library of the patch stays loaded, when it does.
  public var kept: [String]
}

extension TargetState {
  /// Plans taking the disabled patch `patchID` out for good. Refused for an unknown id,
  /// an enabled patch, and a patch another patch requires (even a disabled one: enabling
  /// it again would need this one).
  public func planRemove(_ patchID: String) throws(RegistryError) -> Removal {
    guard let patch = patch(patchID) else {
      throw .unknownPatch(id: patchID, pid: id.pid, known: patchIDs)
    }
    guard patch.state == .disabled else { throw .patchEnabled(id: patchID, pid: id.pid) }
    let dependants = patches.filter { $0.id != patchID && $0.requires.contains(patchID) }.map(\.id)
    if !dependants.isEmpty { throw .stillRequired(id: patchID, dependants: dependants) }
    let others = patches.filter { $0.id != patchID }
    var unload: [LoadedLibrary] = []
    var kept: [String] = []
    for library in libraries where Self.library(library, holds: patch) {
      if let user = others.first(where: { Self.library(library, holds: $0) }) {
        kept.append("library \(library.path) stays loaded: patch '\(user.id)' still uses it")
      } else {
        unload.append(library)
      }
    }
    return Removal(target: id, generation: generation, patch: patch, unload: unload, kept: kept)
  }

  /// Whether `library` is the one `patch` was loaded from: by content where both know
  /// it, else (registries from before the content-addressed store) by path.
  static func library(_ library: LoadedLibrary, holds patch: Patch) -> Bool {
    if let a = library.sha256, let b = patch.sha256 { return a == b }
    return library.path == patch.library
  }

  /// The state after `removal` was carried out: the patch gone, and of its libraries
  /// those in `unloaded` gone from the list (the others stay, still loaded).
  public func removing(_ removal: Removal, unloaded: [LoadedLibrary]) throws(RegistryError) -> TargetState {
    guard removal.target == id else { throw .wrongTarget(planned: removal.target, actual: id) }
    guard removal.generation == generation else {
      throw .stalePlan(pid: id.pid, planned: removal.generation, current: generation)
    }
    var next = TargetState(
      id: id, executable: executable, policy: policy, hooks: hooks,
      patches: patches.filter { $0.id != removal.patch.id }, pages: pages,
      libraries: libraries.filter { !unloaded.contains($0) }, nextSeq: nextSeq, generation: generation + 1)
    next.execID = execID
    next.inheritedFrom = inheritedFrom
    return next
  }
}
