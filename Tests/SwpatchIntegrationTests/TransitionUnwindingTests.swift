import Foundation
import Glibc
import Testing

/// Issue 14: what leaves a frame other than by returning, while the per-thread
/// transition has redirected its return address: `longjmp` (the thread is found again
/// and switched, or caught at its next frame), `pthread_cancel` (the thread unwinds
/// through the stub and exits; the transition counts it out), and C++ exceptions
/// (threads of a process that can throw are never caught on return: swpatch waits).
@Suite(.serialized, .needsRoot, .needsFixtures) struct TransitionUnwindingTests {
  static func counts(_ target: Fixture, from: Int) throws -> [String: Int] {
    try HotFunctionTests.counts(target, from: from)
  }

  @Test func threadsThatLongjmpOutOfACaughtFrameStillSwitchAndNeverMixVersions() throws {
    let ws = Workspace()
    let target = try Fixture("hot", ["2", "longjmp"])
    let start = try Self.counts(target, from: 1)
    #expect((start["jumps"] ?? 0) > 0, "\(start)")
    let patch = ws.patchFile(
      "hot", library: "libhot.so", functions: [("compute", "compute_v2"), ("helper", "helper_v2")])
    for round in 0..<10 {
      let attach = ws.swpatch(
        round == 0 ? "attach" : "enable", "\(target.pid)", round == 0 ? patch : "hot", "--json")
      #expect(attach.status == 0, "\(attach.output)\n\(ws.daemonLog)")
      #expect(attach.json?["retries"] as? Int == 0, "\(attach.output)")
      let disable = ws.swpatch("disable", "\(target.pid)", "hot", "--json")
      #expect(disable.status == 0, "\(disable.output)")
    }
    let end = try Self.counts(target, from: target.output.count)
    #expect(end["mixed"] == 0, "\(end)")
    #expect((end["jumps"] ?? 0) > (start["jumps"] ?? 0), "\(end)")
    #expect((end["flips"] ?? .max) <= 20, "\(end)")
    #expect((end["v2"] ?? 0) > 0, "\(end)")
    #expect(target.isAlive)
  }

  @Test func aThreadCancelledInsideACaughtFrameUnwindsThroughTheStubAndTheTransitionEnds() throws {
    let ws = Workspace()
    let target = try Fixture("hot", ["2", "park"])
    _ = try Self.counts(target, from: 1)
    kill(target.pid, SIGUSR1)
    let parked = try #require(target.output.wait(from: 0) { $0.hasPrefix("parked tid=") })
    let patch = ws.patchFile(
      "hot", library: "libhot.so", functions: [("compute", "compute_v2"), ("helper", "helper_v2")])
    let result = LineBuffer()
    Thread {
      let attach = ws.swpatch("attach", "\(target.pid)", patch, "--retry-for", "30s", "--json")
      result.append(attach.output)
    }.start()
    // The parked worker is inside compute: the attach waits for it to return.
    var waiting = false
    for _ in 0..<1000 where !waiting {
      waiting =
        (try? String(contentsOfFile: ws.stateDir + "/swpatchd.log", encoding: .utf8))?
        .contains("waiting: thread") == true
      if !waiting { usleep(10_000) }
    }
    #expect(waiting, "the attach never waited for the parked thread (\(parked.1))")
    kill(target.pid, SIGUSR2)
    #expect(target.output.wait(from: 0) { $0.hasPrefix("cancelled worker=0") } != nil)
    let answer = try #require(result.wait(timeout: 30) { _ in true })
    let json = (try? JSONSerialization.jsonObject(with: Data(answer.1.utf8))) as? [String: Any]
    #expect(json?["operation"] as? String == "attach", "\(answer.1)")
    #expect((json?["threads_caught"] as? Int ?? 0) >= 1, "\(answer.1)")
    let end = try Self.counts(target, from: target.output.count)
    #expect(end["mixed"] == 0, "\(end)")
    #expect((end["v2"] ?? 0) > 0, "the other worker never ran the new version: \(end)")
    #expect(target.isAlive)
  }

  @Test func threadsOfACxxProgramThatThrowsThroughTheFunctionAreWaitedForNotCaught() throws {
    let ws = Workspace()
    let target = try Fixture("hotxx", ["2"])
    let start = try #require(target.output.wait(from: 1) { $0.hasPrefix("calls=") })
    #expect(!start.1.contains("throws=0"), "\(start.1)")
    // Only compute: the original helper goes on throwing through the replacement.
    let patch = ws.patchFile("hot", library: "libhot.so", functions: [("compute", "compute_v2")])
    let stack = ws.swpatch("attach", "\(target.pid)", patch, "--retry-for", "1s", "--json")
    if stack.status == 0 {
      #expect((stack.json?["threads_caught"] as? Int) == 0, "\(stack.output)")
    } else {
      let error = stack.json?["error"] as? [String: Any]
      #expect(error?["code"] as? String == "stack_check_timeout", "\(stack.output)")
      #expect((error?["message"] as? String)?.contains("retried for 1 s") == true, "\(stack.output)")
      let entry = ws.swpatch("attach", "\(target.pid)", patch, "--consistency", "entry", "--json")
      #expect(entry.status == 0, "\(entry.output)")
    }
    // Exceptions still unwind through compute (now the replacement) and are caught.
    let mark = target.output.count
    let before = try #require(target.output.wait(from: mark) { $0.hasPrefix("calls=") })
    let after = try #require(target.output.wait(from: mark + 2) { $0.hasPrefix("calls=") })
    func field(_ line: String, _ key: String) -> Int {
      line.split(separator: " ").first { $0.hasPrefix(key + "=") }.flatMap {
        Int($0.dropFirst(key.count + 1))
      } ?? -1
    }
    #expect(field(after.1, "throws") > field(before.1, "throws"), "\(before.1) / \(after.1)")
    #expect(target.isAlive)
  }
}
