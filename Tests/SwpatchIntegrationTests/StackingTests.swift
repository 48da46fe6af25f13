import Foundation
import Glibc
import Testing

/// The stacking scenario of docs/policies.md, driven through the CLI against a running
/// fixture whose output is checked after every step.
@Suite(.serialized, .needsRoot, .needsFixtures) struct StackingTests {
  /// Attaches p1, p2, p3 (each replacing foo) in order under `policy`.
  func stackThree(_ ws: Workspace, _ target: Fixture, policy: String) throws {
    #expect(target.waitForValue("foo", "100"))
    for n in 1...3 {
      let patch = ws.patchFile("p\(n)", library: "libp\(n).so", functions: [("foo", "foo_p\(n)")])
      let result = ws.swpatch("attach", "\(target.pid)", patch, "--policy", policy)
      #expect(result.status == 0, "\(result.output)")
      #expect(target.waitForValue("foo", "10\(n)", from: target.output.count))
    }
  }

  @Test func anyPolicyFallsBackToWhateverIsOnTop() throws {
    let ws = Workspace()
    let target = try Fixture("loop", ["20"])
    try stackThree(ws, target, policy: "any")
    #expect(try fooStack(ws, target) == ["p3", "p2", "p1", "(original)"])
    #expect(ws.swpatch("disable", "\(target.pid)", "p2").status == 0)
    let mark = target.output.count
    #expect(target.keepsRunning(lines: 3))
    #expect(target.output.all[mark...].allSatisfy { $0.contains("foo=103") })
    #expect(ws.swpatch("disable", "\(target.pid)", "p3").status == 0)
    #expect(target.waitForValue("foo", "101", from: target.output.count))
    #expect(try fooStack(ws, target) == ["p1", "(original)"])
    let json = try #require(ws.swpatch("status", "--json").json)
    let patches = ((json["targets"] as? [[String: Any]])?.first?["patches"] as? [[String: Any]]) ?? []
    #expect(patches.map { "\($0["id"]!)=\($0["state"]!)" } == ["p1=enabled", "p2=disabled", "p3=disabled"])
  }

  @Test func stackPolicyRefusesBelowTopAndUnwindsInOrder() throws {
    let ws = Workspace()
    let target = try Fixture("loop", ["20"])
    try stackThree(ws, target, policy: "stack")
    let foo = try address(of: "foo", in: target, workspace: ws)
    let registryBefore = try String(contentsOfFile: ws.stateDir + "/registry.json", encoding: .utf8)
    let slotBefore = target.memory(at: foo, count: 16)
    let refused = ws.swpatch("disable", "\(target.pid)", "p2")
    #expect(refused.status == 1)
    #expect(refused.output.contains("p3"), "\(refused.output)")
    #expect(try String(contentsOfFile: ws.stateDir + "/registry.json", encoding: .utf8) == registryBefore)
    #expect(target.memory(at: foo, count: 16) == slotBefore)
    #expect(target.waitForValue("foo", "103", from: target.output.count))
    for (patch, expected) in [("p3", "102"), ("p2", "101"), ("p1", "100")] {
      let result = ws.swpatch("disable", "\(target.pid)", patch)
      #expect(result.status == 0, "\(result.output)")
      #expect(target.waitForValue("foo", expected, from: target.output.count))
    }
    #expect(try fooStack(ws, target) == ["(original)"])
    #expect(target.memory(at: foo, count: 16) != slotBefore)
    #expect(target.memory(at: foo, count: 1) != [0xe9])
  }

  @Test func originalBytesAreBackAfterTheLastDisable() throws {
    let ws = Workspace()
    let target = try Fixture("loop", ["20"])
    #expect(target.waitForValue("foo", "100"))
    let foo = try address(of: "foo", in: target, workspace: ws)
    let pristine = target.memory(at: foo, count: 16)
    let patch = ws.patchFile("p1", library: "libp1.so", functions: [("foo", "foo_p1")])
    #expect(ws.swpatch("attach", "\(target.pid)", patch).status == 0)
    #expect(target.memory(at: foo, count: 16) != pristine)
    #expect(ws.swpatch("disable", "\(target.pid)", "p1").status == 0)
    #expect(target.memory(at: foo, count: 16) == pristine)
    #expect(target.waitForValue("foo", "100", from: target.output.count))
  }

  @Test func multiFunctionPatchBlockedOnOneHookUnderStackMovesWholeUnderAny() throws {
    for policy in ["stack", "any"] {
      let ws = Workspace()
      let target = try Fixture("loop", ["20"])
      #expect(target.waitForValue("bar", "200"))
      let both = ws.patchFile("p1", library: "libp1.so", functions: [("foo", "foo_p1"), ("bar", "bar_p1")])
      let barOnly = ws.patchFile("p2", library: "libp2.so", functions: [("bar", "bar_p2")])
      #expect(ws.swpatch("attach", "\(target.pid)", both, "--policy", policy).status == 0)
      #expect(ws.swpatch("attach", "\(target.pid)", barOnly).status == 0)
      #expect(target.waitForValue("bar", "202", from: target.output.count))
      let result = ws.swpatch("disable", "\(target.pid)", "p1")
      if policy == "stack" {
        #expect(result.status == 1)
        #expect(result.output.contains("p2"))
        let mark = target.output.count
        #expect(target.keepsRunning())
        #expect(target.output.all[mark...].allSatisfy { $0.contains("foo=101") && $0.contains("bar=202") })
      } else {
        #expect(result.status == 0, "\(result.output)")
        // Both functions left their stacks in one stop: foo is original, bar stays p2.
        let mark = target.output.count
        let line = target.output.wait(from: mark) { $0.contains("foo=100") }
        #expect(line?.1.contains("bar=202") == true)
      }
    }
  }

  @Test func reenablePushesOnTopAgain() throws {
    let ws = Workspace()
    let target = try Fixture("loop", ["20"])
    try stackThree(ws, target, policy: "any")
    #expect(ws.swpatch("disable", "\(target.pid)", "p1").status == 0)
    #expect(ws.swpatch("enable", "\(target.pid)", "p1").status == 0)
    #expect(target.waitForValue("foo", "101", from: target.output.count))
    #expect(try fooStack(ws, target) == ["p1", "p3", "p2", "(original)"])
  }

  @Test func atomicReplaceDisablesEveryOtherPatchInOneStop() throws {
    let ws = Workspace()
    let target = try Fixture("loop", ["20"])
    #expect(target.waitForValue("bar", "200"))
    let p1 = ws.patchFile("p1", library: "libp1.so", functions: [("foo", "foo_p1"), ("bar", "bar_p1")])
    let p2 = ws.patchFile(
      "p2", library: "libp2.so", functions: [("foo", "foo_p2")], extra: #", "replace": true"#)
    #expect(ws.swpatch("attach", "\(target.pid)", p1).status == 0)
    let result = ws.swpatch("attach", "\(target.pid)", p2, "--json")
    #expect(result.status == 0, "\(result.output)")
    #expect(result.json?["also_disabled"] as? [String] == ["p1"])
    // foo runs p2's; bar, which p2 does not cover, is back to its original code.
    let line = target.output.wait(from: target.output.count) { $0.contains("foo=102") }
    #expect(line?.1.contains("bar=200") == true)
  }

  @Test func requiresIsEnforcedOnEnableAndDisable() throws {
    let ws = Workspace()
    let target = try Fixture("loop", ["20"])
    #expect(target.waitForValue("foo", "100"))
    let base = ws.patchFile("p1", library: "libp1.so", functions: [("foo", "foo_p1")])
    let dependant = ws.patchFile(
      "p2", library: "libp2.so", functions: [("bar", "bar_p2")], extra: #", "requires": ["p1"]"#)
    let early = ws.swpatch("attach", "\(target.pid)", dependant)
    #expect(early.status == 1)
    #expect(early.output.contains("p1"))
    #expect(ws.swpatch("attach", "\(target.pid)", base, "--policy", "any").status == 0)
    #expect(ws.swpatch("attach", "\(target.pid)", dependant).status == 0)
    let refused = ws.swpatch("disable", "\(target.pid)", "p1")
    #expect(refused.status == 1)
    #expect(refused.output.contains("p2"), "\(refused.output)")
    #expect(target.waitForValue("foo", "101", from: target.output.count))
  }

  @Test func secondAttachOfTheSameIdSaysAlreadyApplied() throws {
    let ws = Workspace()
    let target = try Fixture("loop", ["20"])
    #expect(target.waitForValue("foo", "100"))
    let patch = ws.patchFile("p1", library: "libp1.so", functions: [("foo", "foo_p1")])
    #expect(ws.swpatch("attach", "\(target.pid)", patch).status == 0)
    let again = ws.swpatch("attach", "\(target.pid)", patch)
    #expect(again.status == 1)
    #expect(again.output.contains("already applied"))
    #expect(again.output.contains("enabled"))
    let other = ws.swpatch(
      "attach", "\(target.pid)", ws.patchFile("p2", library: "libp2.so", functions: [("foo", "foo_p2")]),
      "--policy", "any")
    #expect(other.status == 1)
    #expect(other.output.contains("policy"))
  }

  @Test func failedStepMidPlanLeavesTargetAndRegistryAsTheyWere() throws {
    let ws = Workspace()
    let target = try Fixture("loop", ["20"])
    #expect(target.waitForValue("bar", "200"))
    let p1 = ws.patchFile("p1", library: "libp1.so", functions: [("foo", "foo_p1"), ("bar", "bar_p1")])
    #expect(ws.swpatch("attach", "\(target.pid)", p1).status == 0)
    // Something else rewrites bar's slot cell behind swpatch's back.
    let json = try #require(ws.swpatch("status", "--json").json)
    let hooks = try #require((json["targets"] as? [[String: Any]])?.first?["hooks"] as? [[String: Any]])
    let bar = try #require(hooks.first { $0["function"] as? String == "bar" })
    let slot = try #require(UInt64((bar["slot"] as! String).dropFirst(2), radix: 16))
    let barP1 = try #require(
      UInt64(((bar["stack"] as! [[String: Any]])[0]["address"] as! String).dropFirst(2), radix: 16))
    let mem = try #require(FileHandle(forUpdatingAtPath: "/proc/\(target.pid)/mem"))
    try mem.seek(toOffset: slot + 16)
    // Point bar's cell at foo_p1 (a valid function returning 101), unknown to the registry.
    let fooP1 = try #require(
      UInt64(
        (((hooks.first { $0["function"] as? String == "foo" })!["stack"] as! [[String: Any]])[0]["address"]
          as! String).dropFirst(2), radix: 16))
    try mem.write(contentsOf: withUnsafeBytes(of: fooP1.littleEndian, { Data($0) }))
    try mem.close()
    #expect(barP1 != fooP1)
    #expect(target.waitForValue("bar", "101", from: target.output.count))
    let registryBefore = try String(contentsOfFile: ws.stateDir + "/registry.json", encoding: .utf8)
    let foo = try address(of: "foo", in: target, workspace: ws)
    let fooSlotCell = (hooks.first { $0["function"] as? String == "foo" })!["slot"] as! String
    let fooCell = try #require(UInt64(fooSlotCell.dropFirst(2), radix: 16)) + 16
    let cellBefore = target.memory(at: fooCell, count: 8)
    let entryBefore = target.memory(at: foo, count: 8)
    // p2 switches foo's cell first, then finds bar's cell drifted: all must roll back.
    let p2 = ws.patchFile("p2", library: "libp2.so", functions: [("foo", "foo_p2"), ("bar", "bar_p2")])
    let result = ws.swpatch("attach", "\(target.pid)", p2)
    #expect(result.status == 1)
    #expect(result.output.contains("not what the registry recorded"), "\(result.output)")
    #expect(target.memory(at: fooCell, count: 8) == cellBefore)
    #expect(target.memory(at: foo, count: 8) == entryBefore)
    #expect(try String(contentsOfFile: ws.stateDir + "/registry.json", encoding: .utf8) == registryBefore)
    let mark = target.output.count
    #expect(target.keepsRunning())
    #expect(target.output.all[mark...].allSatisfy { $0.contains("foo=101") })
  }
}

/// The stack of foo as `status --json` shows it, top first.
func fooStack(_ ws: Workspace, _ target: Fixture) throws -> [String] {
  let json = try #require(ws.swpatch("status", "\(target.pid)", "--json").json)
  let targets = try #require(json["targets"] as? [[String: Any]])
  guard let hooks = targets.first?["hooks"] as? [[String: Any]],
    let foo = hooks.first(where: { $0["function"] as? String == "foo" }),
    let stack = foo["stack"] as? [[String: Any]]
  else { return ["(original)"] }
  return stack.map { ($0["patch"] as? String) ?? (($0["original"] as? Bool) == true ? "(original)" : "?") }
}
