import SwpatchBase
import Testing

@testable import SwpatchRegistry

/// Attaches `patch` as loaded from a library with content `sha256`, recording the
/// library as loaded now when `loadsLibrary` (the first patch of that content).
private func attach(_ state: TargetState, _ patch: Patch, sha256: String, loadsLibrary: Bool = true) throws
  -> TargetState
{
  var patch = patch
  patch.sha256 = sha256
  let plan = try state.planAttach(patch, policy: state.policy)
  let installs = Dictionary(uniqueKeysWithValues: plan.newHooks.map { ($0, fakeInstall($0)) })
  let library = LoadedLibrary(
    path: patch.library, handle: 0x5000 + UInt64(state.libraries.count), sha256: sha256)
  return try state.committing(plan, installs: installs, newLibraries: loadsLibrary ? [library] : [])
}

private func removal(_ body: () throws -> Removal) -> RegistryError? {
  do {
    _ = try body()
    return nil
  } catch let error as RegistryError {
    return error
  } catch {
    return nil
  }
}

@Test func removingADisabledPatchForgetsItAndUnloadsItsLibrary() throws {
  var state = try attach(fresh(.any), makePatch("p1", [foo]), sha256: "aa")
  state = try attach(state, makePatch("p2", [bar]), sha256: "bb")
  state = try disable(state, "p1")
  let plan = try state.planRemove("p1")
  #expect(plan.unload.map(\.sha256) == ["aa"])
  #expect(plan.kept.isEmpty)
  let next = try state.removing(plan, unloaded: plan.unload)
  #expect(next.patchIDs == ["p2"])
  #expect(next.libraries.map(\.sha256) == ["bb"])
  #expect(next.generation == state.generation + 1)
  #expect(next.hooks == state.hooks)
  // A removal decided on an older state is refused.
  #expect(throws: RegistryError.self) { try next.removing(plan, unloaded: []) }
}

@Test func aLibraryAnotherPatchUsesStaysLoaded() throws {
  var state = try attach(fresh(.any), makePatch("p1", [foo]), sha256: "aa")
  state = try attach(state, makePatch("p2", [bar]), sha256: "aa", loadsLibrary: false)
  state = try disable(state, "p1")
  let plan = try state.planRemove("p1")
  #expect(plan.unload.isEmpty)
  #expect(plan.kept.count == 1 && plan.kept[0].contains("'p2'"), "\(plan.kept)")
  state = try state.removing(plan, unloaded: [])
  #expect(state.libraries.count == 1)
  // Once the last user goes, the library goes with it.
  state = try disable(state, "p2")
  #expect(try state.planRemove("p2").unload.map(\.sha256) == ["aa"])
}

@Test func removeRefusesEnabledUnknownAndRequiredPatches() throws {
  var state = try attach(fresh(.any), makePatch("p1", [foo]), sha256: "aa")
  state = try attach(state, makePatch("p2", [bar], requires: ["p1"]), sha256: "bb")
  #expect(removal { try state.planRemove("p1") }?.code == "patch_enabled")
  #expect(removal { try state.planRemove("nope") }?.code == "unknown_patch")
  state = try disable(state, "p2")
  state = try disable(state, "p1")
  let required = try #require(removal { try state.planRemove("p1") })
  #expect(required == .stillRequired(id: "p1", dependants: ["p2"]))
  #expect(required.code == "still_required")
}

@Test func attachingAnotherBuildUnderAKnownIdIsLibraryChanged() throws {
  let state = try attach(fresh(.any), makePatch("p1", [foo]), sha256: "aa")
  var rebuilt = makePatch("p1", [foo])
  rebuilt.sha256 = "cc"
  let error = try #require(refusal { try state.planAttach(rebuilt, policy: nil) })
  #expect(error == .libraryChanged(id: "p1", pid: tid.pid, stored: "aa", new: "cc"))
  #expect(error.description.contains("aa") && error.description.contains("cc"))
  #expect(error.description.contains("--upgrade") && error.description.contains("new id"))
  rebuilt.sha256 = "aa"
  #expect(refusal { try state.planAttach(rebuilt, policy: nil) }?.code == "already_applied")
}

@Test func upgradeReplacesTheMiddleEntryInPlaceAndRelinksPrevCells() throws {
  func withPrev(_ id: String, cell: UInt64, sha256: String, address: UInt64? = nil) -> Patch {
    var patch = makePatch(id, [foo])
    patch.functions[0].prevCell = cell
    if let address { patch.functions[0].replacementAddr = address }
    patch.sha256 = sha256
    return patch
  }
  var state = fresh(.stack)
  for (id, cell) in [("w1", 0x1000), ("w2", 0x2000), ("w3", 0x3000)] {
    state = try attach(state, withPrev(id, cell: UInt64(cell), sha256: id))
  }
  let rebuilt = withPrev("w2", cell: 0x2800, sha256: "w2-new", address: 0x7e00_0000_0000)
  let plan = try state.planUpgrade(rebuilt)
  #expect(plan.operation == .upgrade(patchID: "w2"))
  // The top (w3) does not change, so no slot store: only the prev cells of the stack.
  #expect(
    plan.effects == [
      .setPrev(oldAddr: foo.oldAddr, cell: 0x1000, to: .original),
      .setPrev(oldAddr: foo.oldAddr, cell: 0x2800, to: .replacement(replacementAddr("w1", foo))),
      .setPrev(oldAddr: foo.oldAddr, cell: 0x3000, to: .replacement(0x7e00_0000_0000)),
    ])
  #expect(state.versionsLeaving(plan).map(\.address) == [replacementAddr("w2", foo)])
  let next = try commit(state, plan)
  #expect(stackIDs(next, foo) == ["w3", "w2", "w1"])
  #expect(next.hook(at: foo.oldAddr)?.stack[1].address == 0x7e00_0000_0000)
  #expect(next.patch("w2")?.sha256 == "w2-new")
  #expect(next.patch("w2")?.state == .enabled)
  // Another function list is refused; the same build again is already applied.
  var other = makePatch("w2", [bar])
  other.sha256 = "w2-other"
  #expect(refusal { try state.planUpgrade(other) }?.code == "upgrade_mismatch")
  #expect(
    refusal { try state.planUpgrade(withPrev("w2", cell: 0x2000, sha256: "w2")) }?.code == "already_applied")
}
