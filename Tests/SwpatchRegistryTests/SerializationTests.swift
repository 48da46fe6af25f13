import Foundation
import SwpatchBase
import Testing

@testable import SwpatchRegistry

private func json(_ value: some Encodable) throws -> Data {
  let encoder = JSONEncoder()
  encoder.outputFormatting = [.sortedKeys]
  return try encoder.encode(value)
}

private func object(_ data: Data) throws -> [String: Any] {
  try #require(JSONSerialization.jsonObject(with: data) as? [String: Any])
}

/// The scenario from the status contract: p2 disabled under p3, p1 at the bottom.
private func statusScenario() throws -> TargetState {
  var state = try threeOnFoo(.stack)
  state = try disable(state, "p3")
  state = try disable(state, "p2")
  return try enable(state, "p3")
}

@Test func registryStateRoundTripsThroughJSON() throws {
  var first = try statusScenario()
  first = try first.committing(
    first.planAttach(makePatch("p4", [bar]), policy: nil), installs: [bar.oldAddr: fakeInstall(bar.oldAddr)],
    newPages: [TrampolinePage(base: 0x7ff0_0000_0000, size: 4096)],
    newLibraries: [LoadedLibrary(path: "/tmp/p4.so", handle: 0x5555_0000_1000, sha256: nil)])
  let second = try attach(
    TargetState.new(id: TargetID(pid: 17, startTime: 5), executable: "/bin/x", policy: .any),
    makePatch("q", [baz]))
  let registry = RegistryState(targets: [first, second])
  #expect(registry.targets.map(\.id.pid) == [17, 4242])

  let decoded = try JSONDecoder().decode(RegistryState.self, from: json(registry))
  #expect(decoded == registry)
  // The lookup indexes are rebuilt, not just the arrays.
  let target = try #require(decoded.target(tid))
  #expect(target.hook(at: foo.oldAddr)?.active?.patch == "p3")
  #expect(target.patch("p2")?.state == .disabled)
  // And the decoded state still plans like the original.
  #expect(try target.planDisable("p3") == first.planDisable("p3"))
}

@Test func registryUpsertReplacesAndRemoveForgets() throws {
  var registry = RegistryState()
  let state = try threeOnFoo(.any)
  registry.upsert(fresh(.any))
  registry.upsert(state)
  #expect(registry.targets.count == 1)
  #expect(registry.target(tid) == state)
  #expect(registry.remove(tid) == state)
  #expect(registry.target(tid) == nil)
}

@Test func statusJSONKeepsTheContractKeysAndTopFirstStacks() throws {
  let report = StatusReport(targets: [try statusScenario()])
  let root = try object(json(report))
  let targets = try #require(root["targets"] as? [[String: Any]])
  let target = try #require(targets.first)
  #expect(Set(target.keys).isSuperset(of: ["pid", "start_time", "executable", "policy", "hooks", "patches"]))
  #expect(target["pid"] as? Int == 4242)
  #expect(target["start_time"] as? Int == 81234)
  #expect(target["executable"] as? String == "/srv/app")
  #expect(target["policy"] as? String == "stack")

  let hook = try #require((target["hooks"] as? [[String: Any]])?.first)
  #expect(Set(hook.keys).isSuperset(of: ["function", "object", "old_addr", "stack"]))
  #expect(hook["function"] as? String == "foo")
  #expect(hook["object"] as? String == "app")
  #expect(hook["old_addr"] as? String == "0x55d1c0a01139")
  let stack = try #require(hook["stack"] as? [[String: Any]])
  #expect(stack.count == 3)
  #expect(stack[0]["patch"] as? String == "p3")
  #expect(stack[0]["replacement"] as? String == "foo_p3")
  #expect(stack[0]["address"] as? String == hexAddress(replacementAddr("p3", foo)))
  #expect(stack[1]["patch"] as? String == "p1")
  #expect(stack[2].count == 1)
  #expect(stack[2]["original"] as? Bool == true)

  let patches = try #require(target["patches"] as? [[String: Any]])
  #expect(patches.map { $0["id"] as? String } == ["p1", "p2", "p3"])
  #expect(patches.map { $0["state"] as? String } == ["enabled", "disabled", "enabled"])
}

@Test func statusReportRoundTripsThroughJSON() throws {
  let report = StatusReport(targets: [try statusScenario()])
  #expect(try JSONDecoder().decode(StatusReport.self, from: json(report)) == report)
}

@Test func planDescribesOneLinePerEffectAndEncodesHexAddresses() throws {
  var state = try attach(fresh(.stack), makePatch("p1", [foo, bar]))
  state = try attach(state, makePatch("p2", [foo]))
  let plan = try state.planAttach(makePatch("r", [foo, baz], replace: true), policy: nil)
  let lines = plan.description.split(separator: "\n")
  #expect(lines.count == 1 + plan.effects.count)
  #expect(lines[0].contains("attach 'r'"))
  #expect(lines[0].contains("also disables p1, p2"))
  #expect(lines.contains { $0.contains("unhook bar") })

  let data = try json(plan)
  let text = String(decoding: data, as: UTF8.self)
  #expect(text.contains("\"old_addr\":\"\(hexAddress(bar.oldAddr))\""))
  #expect(try JSONDecoder().decode(Plan.self, from: data) == plan)
  // A decoded plan is still committable.
  let decoded = try JSONDecoder().decode(Plan.self, from: data)
  #expect(try commit(state, decoded).patch("r")?.state == .enabled)
}

@Test func planWithoutMemoryChangesSaysSo() throws {
  let plan = try threeOnFoo(.any).planDisable("p2")
  #expect(plan.description.contains("no memory changes"))
}
