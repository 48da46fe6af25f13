import Foundation
import Glibc
import Testing

/// Issue 13's hammer under `prev`: a wrapper of the original (`prev(x) + 1000`, the
/// original reached through its relocated first instructions) on two functions whose
/// relocated bytes hold a RIP-relative load (loadfirst) and a relative call (callfirst),
/// while eight threads call both and 1,000 disable/enable cycles unhook and re-hook
/// them. Every result a thread sees must be the original's (49) or the wrapper's
/// (1049), and both must be seen.
@Suite(.serialized, .needsRoot, .needsFixtures) struct PrevHammerTests {
  static let cycles = 1000

  @Test func aWrapperOfTheOriginalGivesOnlyValidResultsThroughAThousandCycles() throws {
    let ws = Workspace()
    let target = try Fixture("relhammer", ["50"])
    #expect(target.waitForValue("loadfirst", "49"))
    let patch = ws.write(
      "wrap.json",
      #"""
      {"id": "wrap", "library": "\#(Paths.fixture("librelwrap.so"))", "functions": [
        {"old": "loadfirst", "new": "loadfirst_fix", "prev": "loadfirst_prev"},
        {"old": "callfirst", "new": "callfirst_fix", "prev": "callfirst_prev"}]}
      """#)
    let attach = ws.swpatch("attach", "\(target.pid)", patch, "--policy", "any", "--consistency", "entry")
    #expect(attach.status == 0, "\(attach.output)")
    #expect(target.waitForValue("callfirst", "1049", from: target.output.count))

    // `entry` consistency: the workers are inside these functions nearly all the time,
    // so a stack check would mostly wait (HammerTests says the same). One connection
    // carries every request, so the cycles cost daemon work, not a CLI process each.
    func request(_ op: String) -> String {
      #"{"v":1,"op":"\#(op)","pid":\#(target.pid),"patch_id":"wrap","options":{"consistency":"entry"}}"#
    }
    let requests = (0..<Self.cycles).flatMap { _ in [request("disable"), request("enable")] }
    let answers = rawExchange(ws, requests.flatMap { line($0) }, timeout: 120).split(separator: "\n")
    #expect(answers.count == requests.count)
    let failed = answers.filter { !$0.contains(#""ok":true"#) }
    #expect(failed.count == 0, "\(failed.count) failed, first: \(failed.first ?? "")")

    // The cycles end enabled; a line printed after them has the totals of the run.
    let mark = target.output.count
    let report = try #require(
      target.output.wait(from: mark + 1) { $0.contains("loadfirst=1049 callfirst=1049") })
    let counts = Dictionary(
      uniqueKeysWithValues: report.1.split(separator: " ").compactMap { field -> (String, UInt64)? in
        let parts = field.split(separator: "=")
        guard parts.count == 2, let value = UInt64(parts[1]) else { return nil }
        return (String(parts[0]), value)
      })
    #expect(counts["invalid"] == 0, "\(report.1)")
    #expect((counts["wrapped"] ?? 0) > 0, "no wrapped result was seen: \(report.1)")
    #expect((counts["original"] ?? 0) > 0, "no original result was seen: \(report.1)")
    #expect(target.isAlive)
  }
}
