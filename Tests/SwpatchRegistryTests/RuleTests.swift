import SwpatchBase
import Testing

@testable import SwpatchRegistry

@Test func replacePatchDisablesOthersAndRemovesUncoveredHooks() throws {
  // Policy stack on purpose: atomic replace skips the stack-order check.
  var state = try attach(fresh(.stack), makePatch("p1", [foo, bar]))
  state = try attach(state, makePatch("p2", [foo]))
  let plan = try state.planAttach(makePatch("r", [foo, baz], replace: true), policy: nil)
  let cell = fakeInstall(foo.oldAddr).cellAddr
  #expect(
    plan.effects == [
      .installHook(site: baz, target: replacementAddr("r", baz)),
      .setSlot(
        oldAddr: foo.oldAddr, cellAddr: cell, from: replacementAddr("p2", foo), to: replacementAddr("r", foo)),
      .removeHook(oldAddr: bar.oldAddr, install: fakeInstall(bar.oldAddr)),
    ])
  #expect(plan.alsoDisabled == ["p1", "p2"])
  state = try commit(state, plan)
  #expect(stackIDs(state, foo) == ["r"])
  #expect(stackIDs(state, baz) == ["r"])
  #expect(state.hook(at: bar.oldAddr) == nil)
  #expect(state.patches.map(\.state) == [.disabled, .disabled, .enabled])
}

@Test func replaceCombinedWithRequiresIsInvalid() throws {
  let state = try attach(fresh(.any), makePatch("p1", [foo]))
  let error = try #require(
    refusal { try state.planAttach(makePatch("r", [foo], replace: true, requires: ["p1"]), policy: nil) })
  #expect(error.code == "invalid_patch")
  #expect(error.description.contains("requires"))
}

@Test func patchReplacingOneFunctionTwiceIsInvalid() throws {
  let twice = makePatch("p1", [foo, foo])
  let error = try #require(refusal { try fresh(.any).planAttach(twice, policy: nil) })
  #expect(error.code == "invalid_patch")
  #expect(error.description.contains(hexAddress(foo.oldAddr)))
}

@Test func attachIsRefusedWhileARequiredPatchIsMissingOrDisabled() throws {
  var state = fresh(.any)
  let dependant = makePatch("p2", [bar], requires: ["p1"])
  let missing = try #require(refusal { try state.planAttach(dependant, policy: nil) })
  #expect(missing == .missingRequirement(id: "p2", pid: 4242, missing: ["p1"]))

  state = try disable(attach(state, makePatch("p1", [foo])), "p1")
  let disabled = try #require(refusal { try state.planAttach(dependant, policy: nil) })
  #expect(disabled.code == "missing_requirement")

  state = try enable(state, "p1")
  state = try attach(state, dependant)
  #expect(stackIDs(state, bar) == ["p2"])
}

@Test func enableIsRefusedWhileARequiredPatchIsDisabled() throws {
  var state = try attach(fresh(.any), makePatch("p1", [foo]))
  state = try attach(state, makePatch("p2", [bar], requires: ["p1"]))
  state = try disable(disable(state, "p2"), "p1")
  let error = try #require(refusal { try state.planEnable("p2") })
  #expect(error == .missingRequirement(id: "p2", pid: 4242, missing: ["p1"]))
}

@Test(arguments: [DisablePolicy.stack, .any])
func disablingARequiredPatchIsRefusedWhileADependantIsEnabled(policy: DisablePolicy) throws {
  var state = try attach(fresh(policy), makePatch("p1", [foo]))
  state = try attach(state, makePatch("p2", [bar], requires: ["p1"]))
  let error = try #require(refusal { try state.planDisable("p1") })
  #expect(error == .requiredBy(id: "p1", dependants: ["p2"]))
  #expect(error.description.contains("disable p2 first"))
  // Once the dependant is off, the requirement no longer holds p1 in place.
  state = try disable(state, "p2")
  state = try disable(state, "p1")
  #expect(state.hooks.isEmpty)
}

@Test func attachingAnAppliedPatchSaysHowToChangeIt() throws {
  let state = try threeOnFoo(.stack)
  let error = try #require(refusal { try state.planAttach(makePatch("p1", [foo]), policy: nil) })
  #expect(error == .alreadyApplied(id: "p1", pid: 4242, state: .enabled))
  #expect(error.code == "already_applied")
  #expect(
    error.description.hasPrefix(
      "patch 'p1' is already applied to pid 4242 (enabled); use `swpatch enable`/`disable`"))
}

@Test func policyCannotChangeWhilePatchesAreApplied() throws {
  let state = try threeOnFoo(.stack)
  let error = try #require(refusal { try state.planAttach(makePatch("p4", [foo]), policy: .any) })
  #expect(error == .policyMismatch(pid: 4242, existing: .stack, requested: .any))
  #expect(
    error.description.hasPrefix("target 4242 uses policy 'stack'; it cannot change while patches are applied")
  )
  // The same policy, or none, is accepted.
  #expect(try state.planAttach(makePatch("p4", [foo]), policy: .stack).effects.count == 1)
}

@Test func firstAttachFixesThePolicy() throws {
  let state = TargetState.new(id: tid, executable: "/srv/app", policy: .stack)
  let plan = try state.planAttach(makePatch("p1", [foo]), policy: .any)
  #expect(plan.policy == .any)
  #expect(try commit(state, plan).policy == .any)
}

@Test func planIsRejectedOnceTheStateHasMoved() throws {
  let state = try threeOnFoo(.any)
  let first = try state.planDisable("p3")
  let second = try state.planDisable("p2")
  let moved = try commit(state, first)
  let error = try #require(
    refusal {
      _ = try commit(moved, second); return second
    })
  #expect(error == .stalePlan(pid: 4242, planned: state.generation, current: moved.generation))
  #expect(error.code == "stale_plan")
  #expect(moved.generation == state.generation + 1)
}

@Test func planForAnotherProcessIsRejected() throws {
  let plan = try fresh(.any).planAttach(makePatch("p1", [foo]), policy: nil)
  let recycled = TargetState.new(
    id: TargetID(pid: 4242, startTime: 99999), executable: "/srv/app", policy: .any)
  let error = try #require(
    refusal {
      _ = try commit(recycled, plan); return plan
    })
  #expect(error.code == "wrong_target")
}

@Test func commitRequiresAnInstallForEveryNewHook() throws {
  let state = fresh(.any)
  let plan = try state.planAttach(makePatch("p1", [foo, bar]), policy: nil)
  #expect(throws: RegistryError.installMismatch(missing: [bar.oldAddr], unexpected: [])) {
    try state.committing(plan, installs: [foo.oldAddr: fakeInstall(foo.oldAddr)])
  }
}

@Test func commitRecordsNewPagesAndLibraries() throws {
  let state = fresh(.any)
  let plan = try state.planAttach(makePatch("p1", [foo]), policy: nil)
  let page = TrampolinePage(base: 0x7ff0_0000_0000, size: 4096)
  let library = LoadedLibrary(path: "/tmp/p1.so", handle: 0x5555_0000_1000, sha256: "ab")
  let after = try state.committing(
    plan, installs: [foo.oldAddr: fakeInstall(foo.oldAddr)], newPages: [page], newLibraries: [library])
  #expect(after.pages == [page])
  #expect(after.libraries == [library])
}
