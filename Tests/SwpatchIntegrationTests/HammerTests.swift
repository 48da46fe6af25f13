import Foundation
import Glibc
import Testing

/// Issue 5's hammer: eight threads call foo() in tight loops while 1,000 disable/enable
/// cycles over three patches switch it under each policy. Every result a thread sees
/// must belong to a version that can be active; the target must not crash; and the
/// final state must match `status`. The requests go down one daemon connection, so the
/// cycles cost daemon work only, not a CLI process each.
@Suite(.serialized, .needsRoot, .needsFixtures) struct HammerTests {
  static let cycles = 1000

  @Test(arguments: ["any", "stack"])
  func thousandCyclesOnlyShowValidVersions(policy: String) throws {
    let ws = Workspace()
    let target = try Fixture("hammer", ["50"])
    #expect(target.waitForValue("foo", "100"))
    for n in 1...3 {
      let patch = ws.patchFile("p\(n)", library: "libp\(n).so", functions: [("foo", "foo_p\(n)")])
      let attach = ws.swpatch(
        "attach", "\(target.pid)", patch, "--policy", policy, "--consistency", "entry")
      #expect(attach.status == 0, "\(attach.output)")
    }
    let requests = Self.requests(pid: target.pid, policy: policy)
    let answers = rawExchange(ws, requests.flatMap { line($0) }, timeout: 120)
      .split(separator: "\n")
    #expect(answers.count == requests.count)
    let failed = answers.filter { !$0.contains(#""ok":true"#) }
    #expect(failed.isEmpty, "\(failed.count) failed, first: \(failed.first ?? "")")
    // Every cycle ends with all three enabled; the last one enabled is on top (always p3
    // under `stack`; under `any` an enable puts its patch on top).
    let top = try #require(requests.last?.firstMatch(of: /"patch_id":"(p\d)"/)?.1).description
    let mark = target.output.count
    let report = try #require(
      target.output.wait(from: mark + 1) { $0.contains("foo=10\(top.dropFirst())") })
    #expect(report.1.hasSuffix(" invalid=0"), "\(report.1)")
    let stack = try fooStack(ws, target)
    #expect(stack.first == top && Set(stack) == ["p1", "p2", "p3", "(original)"], "\(stack)")
    #expect(target.isAlive)
  }

  /// 1,000 disable/enable pairs as protocol lines. Under `any` a random patch goes and
  /// comes back; under `stack` the top one to three patches are unwound and rebuilt.
  /// `entry` consistency: the hammer's threads are in foo() so often that a stack check
  /// would mostly wait (it is exercised elsewhere).
  static func requests(pid: Int32, policy: String) -> [String] {
    func request(_ op: String, _ id: String) -> String {
      #"{"v":1,"op":"\#(op)","pid":\#(pid),"patch_id":"\#(id)","options":{"consistency":"entry"}}"#
    }
    var generator = SystemRandomNumberGenerator()
    var lines: [String] = []
    var pairs = 0
    while pairs < cycles {
      if policy == "any" {
        let id = "p\(Int.random(in: 1...3, using: &generator))"
        lines += [request("disable", id), request("enable", id)]
        pairs += 1
      } else {
        let depth = min(Int.random(in: 1...3, using: &generator), cycles - pairs)
        let ids = ["p3", "p2", "p1"].prefix(depth)
        lines += ids.map { request("disable", $0) } + ids.reversed().map { request("enable", $0) }
        pairs += depth
      }
    }
    return lines
  }
}
