import SwpatchBase
import SwpatchProcess
import SwpatchProtocol
import SwpatchRegistry
import SwpatchSymbols

/// One operation as prepared before its stop: the state it starts from, the plan the
/// registry made of it (every refusal has happened by then), and what the stop needs to
/// carry it out. Attach, enable and disable all become one of these, and then take the
/// same path (`Engine.perform`).
struct PreparedOperation {
  let state: TargetState
  /// The plan decided before the stop. An attach's replacement addresses are still
  /// offsets in the library here (`library.replan` gives the real plan once loaded).
  let draft: Plan
  /// The patch the report is about.
  let patchID: String
  /// The target's objects, when preparing read them.
  var image: ProcessImage?
  /// Sizes of the functions a plan hooks afresh, by old address.
  var sizes: [UInt64: UInt64] = [:]
  /// The object file's bytes at each function a plan hooks or unhooks, by old address.
  var objectBytes: [UInt64: [UInt8]] = [:]
  var notes: [String] = []
  /// Where each undefined symbol of an attach's library binds (for the report).
  var externs: [OperationReport.ExternLine] = []
  /// An attach's library, loaded inside the stop.
  var library: LibraryToLoad?
}

/// The library an attach loads, and how to plan again once its load bias is known.
struct LibraryToLoad {
  let stored: StoredLibrary
  let elf: ElfFile
  /// The operator's path, for messages and the registry.
  let shownAs: String
  /// Where the first function lives: trampoline pages go near it.
  let near: UInt64
  /// The `.dynsym` edits that bind the library's references to the target's own
  /// functions and variables (`ExternBindings`), written into the copy loaded.
  var edits: [FileEdit] = []
  let replan: (UInt64) throws -> Plan
}

/// What resolving an attach's functions found: the sites, their checks' notes, sizes
/// and object bytes.
struct ResolvedSites {
  var sites: [FunctionSite] = []
  var sizes: [UInt64: UInt64] = [:]
  var objectBytes: [UInt64: [UInt8]] = [:]
  var notes: [String] = []
}

extension TargetProcess {
  /// The registry's name for this process.
  var id: TargetID { TargetID(pid: pid, startTime: startTime) }
}

extension Engine {
  /// The registry's entry for `process`, or the one it inherited through `fork`.
  func knownOrInherited(_ process: TargetProcess, registry: RegistryState) -> TargetState? {
    registry.target(process.id)
      ?? inheritedState(
        process.id, registry: registry, execID: RegistryStore.execIdentity(of: process.pid))
  }

  /// Resolves each `old` of an attach in the target and checks it where it is: not an
  /// IFUNC, room for the entry jump, code no branch lands inside, DWARF prototypes;
  /// notes compiler clones and inlined copies; reads the object file's entry bytes.
  func resolveSites(
    _ functions: [PatchFile.Function], newSymbols: [ElfSymbol], state: TargetState, image: ProcessImage,
    process: TargetProcess, library: ElfFile, force: Bool
  ) throws -> ResolvedSites {
    let checks = FunctionChecks(image: image, process: process, library: library, force: force)
    var found = ResolvedSites()
    for (function, newSymbol) in zip(functions, newSymbols) {
      let old = try image.resolve(
        function.old, in: function.object, sympos: function.sympos, file: function.file)
      guard old.kind != .ifunc else {
        throw PatchError.ifunc(
          name: old.name, object: old.object, example: image.ifuncImplementation(of: old.name, in: old.object)
        )
      }
      let clones = image.clones(of: old.name, in: old.object).map(\.name)
      if !clones.isEmpty {
        found.notes.append(
          "\(old.name) has compiler clones (\(clones.joined(separator: ", "))); callers may reach those instead"
        )
      }
      try checkRoom(old, process: process)
      // A hooked function's entry already holds our jump: its code was checked then.
      found.sizes[old.address] =
        state.hook(at: old.address) == nil ? try checks.rewritableSize(of: old) : old.size
      found.notes += try checks.signatureNotes(old: old, new: newSymbol)
      found.notes += checks.inlineNotes(old: old)
      found.sites.append(FunctionSite(name: old.name, object: old.object, oldAddr: old.address))
    }
    found.objectBytes = try checkedObjectBytes(
      found.sites.filter { state.hook(at: $0.oldAddr) == nil }, process: process)
    return found
  }
}
