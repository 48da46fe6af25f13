import Foundation
import Glibc
import Testing

/// `prev`: a replacement calls the version directly below it in the func stack, the
/// original at the bottom (through its relocated prologue), and every `prev` cell is
/// rewritten in the same stop whenever a stack changes.
@Suite(.serialized, .needsRoot, .needsFixtures) struct PrevChainTests {
  /// A patch of compute with `prev`: libprevN's compute_wrapN returns prev(x) + 10^(N-1).
  func wrapper(_ ws: Workspace, _ n: String, replace: Bool = false) -> String {
    let text = #"""
      {"id": "w\#(n)", "library": "\#(Paths.fixture("libprev" + n + ".so"))", "replace": \#(replace),
       "functions": [{"old": "compute", "new": "compute_wrap\#(n)", "prev": "compute_prev\#(n)"}]}
      """#
    return ws.write("w\(n).json", text)
  }

  func attachThree(_ ws: Workspace, _ target: Fixture, policy: String) {
    for (n, expected) in [("1", "43"), ("2", "53"), ("3", "153")] {
      let result = ws.swpatch("attach", "\(target.pid)", wrapper(ws, n), "--policy", policy)
      #expect(result.status == 0, "\(result.output)")
      #expect(target.waitForValue("compute", expected, from: target.output.count), "after w\(n)")
    }
  }

  @Test func threeWrappersComposeAndADisabledMiddleOneIsSkippedUnderAny() throws {
    let ws = Workspace()
    let target = try Fixture("loop", ["20"])
    #expect(target.waitForValue("compute", "42"))
    attachThree(ws, target, policy: "any")
    // The middle one goes: w3 now calls w1, which calls the original.
    #expect(ws.swpatch("disable", "\(target.pid)", "w2").status == 0)
    #expect(target.waitForValue("compute", "143", from: target.output.count))
    let status = try #require(ws.swpatch("status", "--json").json?["targets"] as? [[String: Any]])
    let stack = try #require(
      (status.first?["hooks"] as? [[String: Any]])?.first?["stack"] as? [[String: Any]])
    #expect(stack.compactMap { $0["patch"] as? String } == ["w3", "w1"])
    #expect(stack.first?["prev"] as? String == stack[1]["address"] as? String)
    #expect(stack[1]["prev"] as? String == "original")
    // Back on top, w2 calls w3, which calls w1, which calls the original.
    #expect(ws.swpatch("enable", "\(target.pid)", "w2").status == 0)
    #expect(target.waitForValue("compute", "153", from: target.output.count))
    for id in ["w2", "w3", "w1"] { #expect(ws.swpatch("disable", "\(target.pid)", id).status == 0) }
    #expect(target.waitForValue("compute", "42", from: target.output.count))
  }

  @Test func wrappersUnwindInOrderUnderStack() throws {
    let ws = Workspace()
    let target = try Fixture("loop", ["20"])
    #expect(target.waitForValue("compute", "42"))
    attachThree(ws, target, policy: "stack")
    for (id, expected) in [("w3", "53"), ("w2", "43"), ("w1", "42")] {
      #expect(ws.swpatch("disable", "\(target.pid)", id).status == 0)
      #expect(target.waitForValue("compute", expected, from: target.output.count), "after disabling \(id)")
    }
    #expect(ws.swpatch("enable", "\(target.pid)", "w1").status == 0)
    #expect(target.waitForValue("compute", "43", from: target.output.count))
  }

  @Test func anAtomicReplaceWrapperCallsTheOriginal() throws {
    let ws = Workspace()
    let target = try Fixture("loop", ["20"])
    #expect(target.waitForValue("compute", "42"))
    attachThree(ws, target, policy: "any")
    let result = ws.swpatch("attach", "\(target.pid)", wrapper(ws, "r", replace: true))
    #expect(result.status == 0, "\(result.output)")
    #expect(target.waitForValue("compute", "1042", from: target.output.count))
  }

  @Test func aPrevThatIsNotAPointerVariableIsRefusedBeforeTheTargetIsTouched() throws {
    let ws = Workspace()
    let target = try Fixture("loop", ["20"])
    #expect(target.waitForValue("compute", "42"))
    let compute = try address(of: "compute", in: target, workspace: ws)
    for (prev, words) in [
      ("not_a_pointer", "4 bytes"), ("compute_wrapr", "a function"), ("nothing", "not defined"),
    ] {
      let text = #"""
        {"id": "bad", "library": "\#(Paths.fixture("libprevr.so"))",
         "functions": [{"old": "compute", "new": "compute_wrapr", "prev": "\#(prev)"}]}
        """#
      try expectRefusedAttach(
        target, ws, ws.write("bad.json", text), code: "bad_prev", mentions: [prev, words], watch: compute)
    }
  }
}
