import Foundation
import Glibc
import Testing

/// End to end: real fixtures, the real CLI, the fixtures' own output.
@Suite(.serialized, .needsRoot, .needsFixtures) struct AttachTests {
  @Test func attachRedirectsComputeWhileTheProcessKeepsRunning() throws {
    let ws = Workspace()
    let target = try Fixture("loop", ["20"])
    #expect(target.waitForValue("compute", "42"))
    let startedAt = try #require(processStartTime(target.pid))
    let patch = ws.patchFile("fix-compute", library: "libfix.so", functions: [("compute", "compute_v2")])
    let result = ws.swpatch("attach", "\(target.pid)", patch)
    #expect(result.status == 0, "\(result.output)")
    #expect(result.output.contains("compute"))
    let after = target.output.count
    #expect(target.waitForValue("compute", "63", from: after))
    #expect(target.keepsRunning())
    // The same process ran on, never restarted: the same start time, and its tick count
    // went up by one from line to line across the switch (a restart starts again at 0).
    #expect(processStartTime(target.pid) == startedAt)
    let ticks = target.output.all.compactMap { line in
      line.split(separator: " ").first { $0.hasPrefix("tick=") }.flatMap { Int($0.dropFirst(5)) }
    }
    #expect(ticks.count > after - 1)
    #expect(zip(ticks, ticks.dropFirst()).allSatisfy { $1 == $0 + 1 }, "\(ticks)")
  }

  @Test func everyThreadOfTheThreadedFixtureRunsTheReplacement() throws {
    let ws = Workspace()
    let target = try Fixture("threads", ["20", "6"])
    #expect(target.waitForValue("compute", "42"))
    let patch = ws.patchFile("fix-compute", library: "libfix.so", functions: [("compute", "compute_v2")])
    let result = ws.swpatch("attach", "\(target.pid)", patch)
    #expect(result.status == 0, "\(result.output)")
    let mark = target.output.count
    // Every worker reports the new value, then later reports more calls: still alive.
    var callsAtSwitch: [Int: Int] = [:]
    for worker in 0..<6 {
      let line = target.output.wait(from: mark) { $0.contains("worker=\(worker) compute=63 ") }
      let found = try #require(line, "worker \(worker) never ran the replacement")
      callsAtSwitch[worker] = Int(found.1.split(separator: "=").last ?? "") ?? 0
    }
    let later = target.output.count
    for worker in 0..<6 {
      let more = target.output.wait(from: later) { line in
        guard line.contains("worker=\(worker) compute=63 "),
          let calls = Int(line.split(separator: "=").last ?? "")
        else { return false }
        return calls > callsAtSwitch[worker]!
      }
      #expect(more != nil, "worker \(worker) stopped calling compute")
    }
    #expect(target.isAlive)
  }

  @Test func endbr64IsKeptAndTheJumpGoesAfterIt() throws {
    let ws = Workspace()
    let target = try Fixture("loop-cet", ["20"])
    #expect(target.waitForValue("compute", "42"))
    let compute = try address(of: "compute", in: target, workspace: ws)
    let before = target.memory(at: compute, count: 9)
    #expect(Array(before.prefix(4)) == [0xf3, 0x0f, 0x1e, 0xfa])
    let patch = ws.patchFile("fix-compute", library: "libfix.so", functions: [("compute", "compute_v2")])
    #expect(ws.swpatch("attach", "\(target.pid)", patch).status == 0)
    let after = target.memory(at: compute, count: 9)
    #expect(Array(after.prefix(4)) == [0xf3, 0x0f, 0x1e, 0xfa])
    #expect(after[4] == 0xe9)
    #expect(target.waitForValue("compute", "63", from: target.output.count))
  }

  @Test func localSymbolIsPickedBySympos() throws {
    let ws = Workspace()
    let target = try Fixture("loop", ["20"])
    #expect(target.waitForValue("helper2", "2"))
    let path = ws.write(
      "helper.json",
      #"{"id": "fix-helper", "library": "\#(Paths.fixture("libfix.so"))", "functions": [{"old": "helper", "new": "helper_v2", "object": "loop", "sympos": 2}]}"#
    )
    let result = ws.swpatch("attach", "\(target.pid)", path)
    #expect(result.status == 0, "\(result.output)")
    let mark = target.output.count
    // sympos 2 is loop_helper.c's helper (reported as helper2); helper (sympos 1) stays.
    #expect(target.waitForValue("helper2", "42", from: mark))
    #expect(target.output.all.last?.contains(" helper=1 ") == true)
  }

  @Test func dryRunPrintsThePlanAndChangesNothing() throws {
    let ws = Workspace()
    let target = try Fixture("loop", ["20"])
    #expect(target.waitForValue("compute", "42"))
    let compute = try address(of: "compute", in: target, workspace: ws)
    let before = target.memory(at: compute, count: 16)
    let patch = ws.patchFile("fix-compute", library: "libfix.so", functions: [("compute", "compute_v2")])
    let result = ws.swpatch("attach", "\(target.pid)", patch, "--dry-run", "--json")
    #expect(result.status == 0, "\(result.output)")
    let json = try #require(result.json)
    #expect(json["dry_run"] as? Bool == true)
    #expect((json["plan"] as? [String])?.count == 1)
    #expect(target.memory(at: compute, count: 16) == before)
    let registry = (try? String(contentsOfFile: ws.stateDir + "/registry.json", encoding: .utf8)) ?? ""
    #expect(!registry.contains("fix-compute"))
    let maps = try String(contentsOfFile: "/proc/\(target.pid)/maps", encoding: .utf8)
    #expect(!maps.contains("libfix.so"))
  }

  @Test func stoppedTargetStaysStoppedAndIsPatched() throws {
    let ws = Workspace()
    let target = try Fixture("loop", ["20"])
    #expect(target.waitForValue("compute", "42"))
    kill(target.pid, SIGSTOP)
    defer { kill(target.pid, SIGCONT) }
    usleep(100_000)
    let patch = ws.patchFile("fix-compute", library: "libfix.so", functions: [("compute", "compute_v2")])
    #expect(ws.swpatch("attach", "\(target.pid)", patch).status == 0)
    usleep(200_000)
    let status = try String(contentsOfFile: "/proc/\(target.pid)/status", encoding: .utf8)
    #expect(status.contains("State:\tT (stopped)"))
    let mark = target.output.count
    usleep(200_000)
    #expect(target.output.count == mark, "a stopped target printed")
    kill(target.pid, SIGCONT)
    #expect(target.waitForValue("compute", "63", from: mark))
  }
}
