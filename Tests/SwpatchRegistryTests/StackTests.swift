import Testing

@testable import SwpatchRegistry

@Test func firstAttachInstallsHookAndLaterAttachesRetargetIt() throws {
  var state = fresh(.stack)
  let first = try state.planAttach(makePatch("p1", [foo]), policy: .stack)
  #expect(first.effects == [.installHook(site: foo, target: replacementAddr("p1", foo))])
  state = try commit(state, first)

  let second = try state.planAttach(makePatch("p2", [foo]), policy: nil)
  let cell = fakeInstall(foo.oldAddr).cellAddr
  #expect(
    second.effects == [
      .setSlot(
        oldAddr: foo.oldAddr, cellAddr: cell, from: replacementAddr("p1", foo), to: replacementAddr("p2", foo)
      )
    ])
}

@Test func lastEnabledPatchIsActive() throws {
  let state = try threeOnFoo(.any)
  #expect(state.hook(at: foo.oldAddr)?.active?.patch == "p3")
  #expect(stackIDs(state, foo) == ["p3", "p2", "p1"])
  #expect(state.patches.map(\.enableSeq) == [1, 2, 3])
}

@Test func disableBelowTopUnderAnyPolicyKeepsActiveAndWritesNothing() throws {
  let state = try threeOnFoo(.any)
  let plan = try state.planDisable("p2")
  #expect(plan.effects.isEmpty)
  let after = try commit(state, plan)
  #expect(after.hook(at: foo.oldAddr)?.active?.patch == "p3")
  #expect(stackIDs(after, foo) == ["p3", "p1"])
  #expect(after.patch("p2")?.state == .disabled)
}

@Test func disableTopUnderAnyPolicyRetargetsToNextEnabledBelow() throws {
  let state = try disable(threeOnFoo(.any), "p2")
  let plan = try state.planDisable("p3")
  let cell = fakeInstall(foo.oldAddr).cellAddr
  #expect(
    plan.effects == [
      .setSlot(
        oldAddr: foo.oldAddr, cellAddr: cell, from: replacementAddr("p3", foo), to: replacementAddr("p1", foo)
      )
    ])
  let after = try commit(state, plan)
  let hook = try #require(StatusReport(targets: [after]).targets.first?.hooks.first)
  #expect(
    hook.stack == [
      .replacement(StackEntry(patch: "p1", replacement: "foo_p1", address: replacementAddr("p1", foo))),
      .original,
    ])
}

@Test func disableBelowTopIsRefusedUnderStackPolicy() throws {
  let state = try threeOnFoo(.stack)
  let before = state
  let error = try #require(refusal { try state.planDisable("p2") })
  #expect(
    error
      == .blockedByStack(
        id: "p2", blockers: [StackBlocker(function: "foo", oldAddr: foo.oldAddr, patchesAbove: ["p3"])])
  )
  #expect(error.code == "blocked_by_stack")
  #expect(
    error.description
      == "cannot disable 'p2' under policy 'stack': foo has p3 above it; disable p3 first (or use policy 'any')"
  )
  #expect(state == before)
  #expect(stackIDs(state, foo) == ["p3", "p2", "p1"])
}

@Test func disablingInStackOrderUnwindsToTheOriginal() throws {
  var state = try threeOnFoo(.stack)
  let cell = fakeInstall(foo.oldAddr).cellAddr

  let p3 = try state.planDisable("p3")
  #expect(
    p3.effects == [
      .setSlot(
        oldAddr: foo.oldAddr, cellAddr: cell, from: replacementAddr("p3", foo), to: replacementAddr("p2", foo)
      )
    ])
  state = try commit(state, p3)

  let p2 = try state.planDisable("p2")
  #expect(
    p2.effects == [
      .setSlot(
        oldAddr: foo.oldAddr, cellAddr: cell, from: replacementAddr("p2", foo), to: replacementAddr("p1", foo)
      )
    ])
  state = try commit(state, p2)

  let p1 = try state.planDisable("p1")
  #expect(p1.effects == [.removeHook(oldAddr: foo.oldAddr, install: fakeInstall(foo.oldAddr))])
  state = try commit(state, p1)
  #expect(state.hooks.isEmpty)
  #expect(state.patches.allSatisfy { $0.state == .disabled })
}

@Test func multiFunctionPatchBlockedOnOneHookIsRefusedWholeUnderStackPolicy() throws {
  var state = try attach(fresh(.stack), makePatch("p1", [foo, bar]))
  state = try attach(state, makePatch("p2", [bar]))
  let error = try #require(refusal { try state.planDisable("p1") })
  #expect(
    error
      == .blockedByStack(
        id: "p1", blockers: [StackBlocker(function: "bar", oldAddr: bar.oldAddr, patchesAbove: ["p2"])])
  )
  // foo, where p1 is on top, must stay hooked too: the refusal is all-or-nothing.
  #expect(stackIDs(state, foo) == ["p1"])
  #expect(stackIDs(state, bar) == ["p2", "p1"])
}

@Test func multiFunctionPatchLeavesEveryStackInOnePlanUnderAnyPolicy() throws {
  var state = try attach(fresh(.any), makePatch("p1", [foo, bar]))
  state = try attach(state, makePatch("p2", [bar]))
  let plan = try state.planDisable("p1")
  // bar keeps p2 active, so only foo (emptied) changes memory.
  #expect(plan.effects == [.removeHook(oldAddr: foo.oldAddr, install: fakeInstall(foo.oldAddr))])
  state = try commit(state, plan)
  #expect(state.hook(at: foo.oldAddr) == nil)
  #expect(stackIDs(state, bar) == ["p2"])
}

@Test func disablingATopMultiFunctionPatchRetargetsEveryHookInOnePlan() throws {
  var state = try attach(fresh(.stack), makePatch("p1", [foo, bar]))
  state = try attach(state, makePatch("p2", [foo, bar]))
  let plan = try state.planDisable("p2")
  #expect(plan.effects.count == 2)
  #expect(Set(plan.effects.map(\.oldAddr)) == [foo.oldAddr, bar.oldAddr])
  for effect in plan.effects {
    guard case .setSlot(let addr, _, let from, let to) = effect else {
      Issue.record("expected a slot store, got \(effect)")
      continue
    }
    let site = addr == foo.oldAddr ? foo : bar
    #expect(from == replacementAddr("p2", site))
    #expect(to == replacementAddr("p1", site))
  }
}

@Test func reenablingPushesThePatchBackOnTop() throws {
  var state = try disable(threeOnFoo(.any), "p2")
  let plan = try state.planEnable("p2")
  let cell = fakeInstall(foo.oldAddr).cellAddr
  #expect(
    plan.effects == [
      .setSlot(
        oldAddr: foo.oldAddr, cellAddr: cell, from: replacementAddr("p3", foo), to: replacementAddr("p2", foo)
      )
    ])
  state = try commit(state, plan)
  #expect(stackIDs(state, foo) == ["p2", "p3", "p1"])
  #expect(state.patch("p2")!.enableSeq > state.patch("p3")!.enableSeq)
}

@Test func reenablingAfterFullUnwindReinstallsTheHookWithTheKeptAddress() throws {
  var state = try disable(attach(fresh(.stack), makePatch("p1", [foo])), "p1")
  #expect(state.hooks.isEmpty)
  let plan = try state.planEnable("p1")
  #expect(plan.effects == [.installHook(site: foo, target: replacementAddr("p1", foo))])
  state = try commit(state, plan)
  #expect(stackIDs(state, foo) == ["p1"])
}

@Test func enablingAnEnabledOrDisablingADisabledPatchIsRefused() throws {
  let state = try disable(threeOnFoo(.any), "p2")
  let enabled = try #require(refusal { try state.planEnable("p1") })
  #expect(enabled == .alreadyEnabled(id: "p1", pid: 4242))
  #expect(enabled.description.contains("already enabled"))
  let disabled = try #require(refusal { try state.planDisable("p2") })
  #expect(disabled.code == "already_disabled")
}

@Test func unknownPatchIdListsTheKnownOnes() throws {
  let state = try threeOnFoo(.stack)
  let error = try #require(refusal { try state.planEnable("px") })
  #expect(error == .unknownPatch(id: "px", pid: 4242, known: ["p1", "p2", "p3"]))
  #expect(error.description.contains("known: p1, p2, p3"))
}

@Test func hookKeepsEntryAddressAfterEndbr64ForRemoval() throws {
  var state = fresh(.stack)
  let plan = try state.planAttach(makePatch("p1", [foo]), policy: .stack)
  let install = HookInstall(
    slotAddr: 0x7ff0_0000_1000, cellAddr: 0x7ff0_0000_1008, entryAddr: foo.oldAddr + 4,
    originalBytes: [1, 2, 3, 4, 5], jumpBytes: [0xe9, 0, 0, 0, 0])
  state = try state.committing(plan, installs: [foo.oldAddr: install])
  #expect(state.hook(at: foo.oldAddr)?.install.entryAddr == foo.oldAddr + 4)
  #expect(try state.planDisable("p1").effects == [.removeHook(oldAddr: foo.oldAddr, install: install)])
}

@Test func blockedMessageNamesEveryBlockingHookInAnUnwindableOrder() throws {
  var state = try attach(fresh(.stack), makePatch("p1", [foo, bar]))
  state = try attach(state, makePatch("p2", [foo]))
  state = try attach(state, makePatch("p3", [foo, bar]))
  let error = try #require(refusal { try state.planDisable("p1") })
  #expect(
    error.description
      == "cannot disable 'p1' under policy 'stack': foo has p3, p2 above it and bar has p3 above it;"
      + " disable p3, p2 first (or use policy 'any')")
}

@Test func unwindOrderPutsAPatchAfterEverythingAboveItOnAnyHook() {
  let blockers = [
    StackBlocker(function: "foo", oldAddr: 1, patchesAbove: ["p2"]),
    StackBlocker(function: "bar", oldAddr: 2, patchesAbove: ["p3", "p2"]),
  ]
  #expect(RegistryError.unwindOrder(blockers) == ["p3", "p2"])
}
