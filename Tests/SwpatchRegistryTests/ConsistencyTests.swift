import Testing

@testable import SwpatchRegistry

private func original(_ site: FunctionSite) -> LeavingVersion {
  LeavingVersion(site: site, kind: .original, name: site.name, address: site.oldAddr)
}

private func replacement(_ id: String, _ site: FunctionSite) -> LeavingVersion {
  LeavingVersion(
    site: site, kind: .replacement(patch: id), name: "\(site.name)_\(id)", address: replacementAddr(id, site))
}

@Test func firstAttachLeavesTheOriginals() throws {
  let state = fresh(.stack)
  let plan = try state.planAttach(makePatch("p1", [foo, bar]), policy: .stack)
  #expect(state.versionsLeaving(plan) == [original(foo), original(bar)])
}

@Test func attachOnTopLeavesTheActiveReplacementAndTheOriginal() throws {
  let state = try attach(fresh(.stack), makePatch("p1", [foo]))
  let plan = try state.planAttach(makePatch("p2", [foo]), policy: nil)
  #expect(state.versionsLeaving(plan) == [replacement("p1", foo), original(foo)])
}

@Test func disableLeavesOnlyTheReplacementItTakesOff() throws {
  let two = try attach(attach(fresh(.stack), makePatch("p1", [foo])), makePatch("p2", [foo]))
  #expect(two.versionsLeaving(try two.planDisable("p2")) == [replacement("p2", foo)])
  let one = try disable(two, "p2")
  // The last entry leaves: the hook goes and the original runs again, so it is not retired.
  #expect(one.versionsLeaving(try one.planDisable("p1")) == [replacement("p1", foo)])
}

@Test func disableBelowTopUnderAnyLeavesNothing() throws {
  let state = try threeOnFoo(.any)
  #expect(state.versionsLeaving(try state.planDisable("p2")).isEmpty)
}

@Test func enableLeavesTheActiveReplacementAndTheOriginal() throws {
  let state = try disable(threeOnFoo(.any), "p2")
  #expect(state.versionsLeaving(try state.planEnable("p2")) == [replacement("p3", foo), original(foo)])
}

@Test func atomicReplaceLeavesWhatItUnhooksWithoutItsOriginal() throws {
  let state = try attach(fresh(.stack), makePatch("p1", [foo, bar]))
  let plan = try state.planAttach(makePatch("r", [foo], replace: true), policy: nil)
  // foo moves from p1 to r (its original is retired too); bar loses its hook, so only
  // p1's bar_p1 is left, and bar's original becomes active again.
  #expect(
    state.versionsLeaving(plan) == [replacement("p1", foo), original(foo), replacement("p1", bar)])
}
