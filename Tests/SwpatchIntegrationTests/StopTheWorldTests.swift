import Foundation
import Glibc
import Testing

/// Every thread is held before the first byte is written: many threads, and threads that
/// are created and exit while the target is being stopped.
@Suite(.serialized, .needsRoot, .needsFixtures) struct StopTheWorldTests {
  @Test func twoHundredThreadsAllRunTheReplacement() throws {
    let ws = Workspace()
    let workers = 200
    let target = try Fixture("threads", ["100", "\(workers)", "20"])
    #expect(target.waitForValue("compute", "42"))
    let patch = ws.patchFile("fix-compute", library: "libfix.so", functions: [("compute", "compute_v2")])
    let result = ws.swpatch("attach", "\(target.pid)", patch)
    #expect(result.status == 0, "\(result.output)")
    let mark = target.output.count
    for worker in 0..<workers {
      let line = target.output.wait(from: mark) { $0.contains(" worker=\(worker) compute=63 ") }
      #expect(line != nil, "worker \(worker) never ran the replacement")
    }
    #expect(target.keepsRunning())
    #expect(everyThreadIsUntraced(target.pid))
  }

  @Test func threadsComingAndGoingDuringRepeatedOperationsAreNeitherLostNorBroken() throws {
    let ws = Workspace()
    let target = try Fixture("churn", ["50", "4"])
    #expect(target.waitForValue("compute", "42"))
    let patch = ws.patchFile("fix-compute", library: "libfix.so", functions: [("compute", "compute_v2")])
    let attach = ws.swpatch("attach", "\(target.pid)", patch)
    #expect(attach.status == 0, "\(attach.output)")
    for cycle in 0..<25 {
      for verb in ["disable", "enable"] {
        let result = ws.swpatch(verb, "\(target.pid)", "fix-compute")
        #expect(result.status == 0, "cycle \(cycle) \(verb): \(result.output)")
      }
    }
    // Threads still get created and joined (none was left stopped), every result seen was
    // a legitimate version, and the last state (enabled) is what runs.
    let before = try #require(latest("created", in: target))
    #expect(target.waitForValue("compute", "63", from: target.output.count))
    let after = try #require(latest("created", in: target))
    #expect(after > before, "no thread was created after the operations")
    #expect(latest("invalid", in: target) == 0)
    #expect(target.isAlive)
    #expect(everyThreadIsUntraced(target.pid))
  }

  /// The holder thread keeps a lock 100 ms of every 101, and the library's constructor
  /// takes it: had every other thread stayed stopped during dlopen, the call could never
  /// return (remote_call_timeout). The others run while dlopen runs, and are all held
  /// again before the entry jump is written.
  @Test func otherThreadsRunWhileTheLibraryLoads() throws {
    let ws = Workspace()
    let target = try Fixture("holder", ["20"])
    #expect(target.waitForValue("compute", "42"))
    let patch = ws.patchFile(
      "locked", library: "libneedslock.so", functions: [("compute", "compute_locked")])
    let result = ws.swpatch("attach", "\(target.pid)", patch, "--load-timeout", "3", "--allow-constructors")
    #expect(result.status == 0, "\(result.output)")
    #expect(target.waitForValue("compute", "105", from: target.output.count))
    #expect(target.keepsRunning())
    #expect(everyThreadIsUntraced(target.pid))
  }
}

/// The last value of `key=` the fixture printed.
func latest(_ key: String, in fixture: Fixture) -> Int? {
  for line in fixture.output.all.reversed() {
    for field in line.split(separator: " ") where field.hasPrefix(key + "=") {
      return Int(field.dropFirst(key.count + 1))
    }
  }
  return nil
}

/// True when no thread of `pid` has a tracer or sits in a tracing stop. A thread that
/// exits between the listing and the read is skipped (it has nothing left to show).
func everyThreadIsUntraced(_ pid: pid_t) -> Bool {
  // A process that is gone has no untraced threads: say false, not "all of none".
  guard processExists(pid),
    let tasks = try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task"), !tasks.isEmpty
  else { return false }
  return tasks.allSatisfy { tid in
    guard let status = try? String(contentsOfFile: "/proc/\(pid)/task/\(tid)/status", encoding: .utf8),
      status.contains("TracerPid:")
    else { return true }
    return status.contains("TracerPid:\t0\n") && !status.contains("State:\tt")
  }
}
