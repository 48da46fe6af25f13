import Foundation
import Glibc
import SwpatchProcess
import Testing

/// Services are many processes of one file: `--all-of`, rules for new processes, and
/// `swpatch run` (docs/services.md). Each test runs its own copy of the loop fixture, so
/// that `--all-of` sees only the processes the test started.
@Suite(.serialized, .needsRoot, .needsFixtures) struct ServicesTests {
  /// A private copy of a fixture in the workspace: its own inode.
  func copy(_ name: String, in ws: Workspace) throws -> String {
    let path = ws.directory + "/" + name
    try FileManager.default.copyItem(atPath: Paths.fixture(name), toPath: path)
    return path
  }

  func fix(_ ws: Workspace) -> String {
    ws.patchFile("fix-compute", library: "libfix.so", functions: [("compute", "compute_v2")])
  }

  @Test func aHundredProcessesArePatchedWithAllOfAndRevertedWithDisable() throws {
    let ws = Workspace()
    let loop = try copy("loop", in: ws)
    let targets = try (0..<100).map { _ in try Fixture(path: loop, ["100"]) }
    defer { targets.forEach { $0.stop() } }
    for target in targets { #expect(target.waitForValue("compute", "42")) }

    let start = ContinuousClock.now
    let attached = ws.run(["attach", "--all-of", loop, fix(ws), "--json"])
    let took = ContinuousClock.now - start
    print("attach --all-of over 100 processes: \(took)")
    #expect(attached.status == 0, "\(attached.output.prefix(2000))")
    let json = try #require(attached.json)
    #expect(json["patched"] as? Int == 100)
    #expect(json["already"] as? Int == 0)
    #expect((json["skipped"] as? [Any])?.count == 0)
    #expect((json["failed"] as? [Any])?.count == 0)
    #expect(json["rule"] as? String == "recorded")
    let marks = targets.map { $0.output.count }
    for (target, mark) in zip(targets, marks) {
      #expect(target.waitForValue("compute", "63", from: mark), "pid \(target.pid)")
    }

    let again = ws.run(["attach", "--all-of", loop, fix(ws), "--json"])
    #expect(again.status == 0)
    #expect(again.json?["already"] as? Int == 100)

    let disabled = ws.run(["disable", "--all-of", loop, "fix-compute"])
    #expect(disabled.status == 0, "\(disabled.output.prefix(2000))")
    #expect(disabled.output.hasPrefix("disabled 'fix-compute' on 100 of 100 processes"))
    #expect(disabled.output.contains("rule disabled"))
    let after = targets.map { $0.output.count }
    for (target, mark) in zip(targets, after) {
      #expect(target.waitForValue("compute", "42", from: mark), "pid \(target.pid)")
    }
  }

  @Test func removeAllOfTakesADisabledPatchOutOfEveryProcessAndForgetsItsRule() throws {
    let ws = Workspace()
    let loop = try copy("loop", in: ws)
    let targets = try (0..<4).map { _ in try Fixture(path: loop, ["20"]) }
    defer { targets.forEach { $0.stop() } }
    for target in targets { #expect(target.waitForValue("compute", "42")) }
    let attached = ws.run(["attach", "--all-of", loop, fix(ws), "--json"])
    #expect(attached.json?["patched"] as? Int == 4, "\(attached.output)")

    // Enabled everywhere: every process refuses, and nothing is removed.
    let refused = ws.run(["remove", "--all-of", loop, "fix-compute", "--json"])
    #expect(refused.status == 1)
    let refusals = try #require(refused.json?["failed"] as? [[String: Any]], "\(refused.output)")
    #expect(refusals.count == 4)
    #expect(refusals.allSatisfy { $0["code"] as? String == "patch_enabled" }, "\(refusals)")
    #expect(refused.json?["rule"] == nil)
    let kept = try #require(ws.run(["status", "--json"]).json?["targets"] as? [[String: Any]])
    #expect(kept.count == 4)

    // Disabled in one process only: that one is removed, the others refuse.
    #expect(ws.swpatch("disable", "\(targets[0].pid)", "fix-compute").status == 0)
    let one = ws.run(["remove", "--all-of", loop, "fix-compute", "--json"])
    #expect(one.json?["patched"] as? Int == 1, "\(one.output)")
    #expect((one.json?["failed"] as? [Any])?.count == 3)

    let disabled = ws.run(["disable", "--all-of", loop, "fix-compute"])
    #expect(disabled.status == 0, "\(disabled.output)")
    let removed = ws.run(["remove", "--all-of", loop, "fix-compute"])
    #expect(removed.status == 0, "\(removed.output)")
    #expect(
      removed.output.hasPrefix("removed 'fix-compute' on 3 of 4 processes"), "\(removed.output)")
    #expect(removed.output.contains("skipped pid \(targets[0].pid)"), "\(removed.output)")
    #expect(removed.output.contains("rule removed"), "\(removed.output)")
    for target in targets {
      let maps = try String(contentsOfFile: "/proc/\(target.pid)/maps", encoding: .utf8)
      #expect(!maps.contains("memfd:swpatch-"), "pid \(target.pid) still maps a patch library")
      #expect(target.waitForValue("compute", "42", from: target.output.count))
    }
    let status = try #require(ws.run(["status", "--json"]).json?["targets"] as? [[String: Any]])
    // Each target stays listed (its trampoline page stays), with no patch left.
    #expect(status.count == 4, "\(status)")
    #expect(status.allSatisfy { ($0["patches"] as? [Any])?.isEmpty == true }, "\(status)")
    let rules = ws.run(["rules", "--json"])
    let list = try #require(
      (try? JSONSerialization.jsonObject(with: Data(rules.output.utf8))) as? [[String: Any]],
      "\(rules.output)")
    #expect(list.isEmpty)
  }

  @Test func aRulePatchesNewProcessesAndSurvivesARestartOfTheDaemon() throws {
    let ws = Workspace()
    let loop = try copy("loop", in: ws)
    let first = try Fixture(path: loop, ["10"])
    defer { first.stop() }
    #expect(first.waitForValue("compute", "42"))
    let attached = ws.run(["attach", "--all-of", loop, fix(ws)])
    #expect(attached.status == 0, "\(attached.output)")

    // How long a new process runs unpatched: from its start to its first patched line
    // (it prints every 10 ms).
    var latencies: [Double] = []
    var started: [Fixture] = []
    defer { started.forEach { $0.stop() } }
    for _ in 0..<10 {
      let begin = ContinuousClock.now
      let target = try Fixture(path: loop, ["10"])
      started.append(target)
      #expect(
        target.waitForValue("compute", "63", timeout: 5), "pid \(target.pid) was not patched by the rule")
      let elapsed = ContinuousClock.now - begin
      latencies.append(
        Double(elapsed.components.seconds) * 1000 + Double(elapsed.components.attoseconds) / 1e15)
    }
    let sorted = latencies.sorted()
    print(
      "rule: new process patched after (ms) median \(Int(sorted[sorted.count / 2])), min \(Int(sorted.first!)), max \(Int(sorted.last!))"
    )

    // The rule counts a process once its attach has returned, which is a moment after
    // the process shows the patched value: wait for the count (seen 9 of 10 at load 30).
    var list: [[String: Any]] = []
    for _ in 0..<50 {
      let rules = ws.run(["rules", "--json"])
      list = try #require(
        (try? JSONSerialization.jsonObject(with: Data(rules.output.utf8))) as? [[String: Any]])
      if list.first?["applied"] as? Int == 10 { break }
      usleep(100_000)
    }
    #expect(list.count == 1)
    #expect(list.first?["enabled"] as? Bool == true)
    #expect(list.first?["applied"] as? Int == 10)

    // A process that starts while no daemon runs is patched by the next daemon.
    ws.stopDaemon()
    let orphan = try Fixture(path: loop, ["10"])
    defer { orphan.stop() }
    #expect(orphan.waitForValue("compute", "42"))
    let listed = ws.run(["rules"])
    #expect(listed.output.contains("enabled"), "\(listed.output)")
    #expect(orphan.waitForValue("compute", "63", from: orphan.output.count, timeout: 5))
  }

  @Test func aRuleWhosePatchNoLongerLoadsIsRecordedAndTheProcessRunsOn() throws {
    let ws = Workspace()
    let loop = try copy("loop", in: ws)
    let library = try copy("libfix.so", in: ws)
    let patch = ws.write(
      "fix.json",
      #"{"id": "fix-compute", "library": "\#(library)", "functions": [{"old": "compute", "new": "compute_v2"}]}"#
    )
    let recorded = ws.run(["attach", "--all-of", loop, patch, "--rule-only", "--json"])
    #expect(recorded.status == 0, "\(recorded.output)")
    #expect(recorded.json?["patched"] as? Int == 0)
    #expect(recorded.json?["rule"] as? String == "recorded")
    try FileManager.default.removeItem(atPath: library)

    let target = try Fixture(path: loop, ["20"])
    defer { target.stop() }
    var failures: [[String: Any]] = []
    var status = CLIResult(status: 0, output: "")
    for _ in 0..<50 where failures.isEmpty {
      usleep(100_000)
      status = ws.run(["status", "--all-of", loop, "--json"])
      let rules = status.json?["rules"] as? [[String: Any]]
      failures = rules?.first?["failures"] as? [[String: Any]] ?? []
    }
    #expect(failures.first?["pid"] as? Int == Int(target.pid), "\(status.output)")
    #expect(failures.first?["code"] as? String == "bad_library")
    let log = ws.run(["log", "--pid", "\(target.pid)", "--json"])
    #expect(log.output.contains("rule for new processes"), "\(log.output)")
    #expect(target.keepsRunning())
    #expect(target.waitForValue("compute", "42", from: target.output.count))
  }

  @Test func allOfRefusesAFileThatIsNotELFAndReportsNoProcessWithoutARule() throws {
    let ws = Workspace()
    let text = ws.write("notes.txt", "not a program\n")
    let refused = ws.run(["attach", "--all-of", text, fix(ws), "--json"])
    #expect(refused.status == 1)
    #expect((refused.json?["error"] as? [String: Any])?["code"] as? String == "not_elf")
    let missing = ws.run(["disable", "--all-of", ws.directory + "/nothing", "fix-compute"])
    #expect(missing.status == 1)
    #expect(missing.output.contains("does not exist"), "\(missing.output)")

    let loop = try copy("loop", in: ws)
    let none = ws.run(["attach", "--all-of", loop, fix(ws), "--json"])
    #expect(none.status == 0, "\(none.output)")
    #expect(none.json?["patched"] as? Int == 0)
    let notes = none.json?["notes"] as? [String] ?? []
    #expect(notes.contains { $0.contains("no process") })
    #expect(none.json?["rule"] == nil)
    #expect(ws.run(["rules"]).output == "no rules\n")
  }

  @Test func runAppliesThePatchBeforeMainAndReturnsTheProgramsExitStatus() throws {
    let ws = Workspace()
    let run = ws.run(["run", "--patch", fix(ws), "--", Paths.fixture("firstline")])
    #expect(run.status == 7, "\(run.output)")
    #expect(run.output.hasPrefix("compute=63\n"), "\(run.output)")

    let plain = ws.run(["run", "--", Paths.fixture("firstline")])
    #expect(plain.status == 7)
    #expect(plain.output.hasPrefix("compute=42\n"))

    let bad = ws.write(
      "bad.json",
      #"{"id": "bad", "library": "\#(Paths.fixture("libfix.so"))", "functions": [{"old": "nosuch", "new": "compute_v2"}]}"#
    )
    let refused = ws.run(["run", "--patch", bad, "--", Paths.fixture("firstline")])
    #expect(refused.status == 1)
    #expect(!refused.output.contains("compute="), "main ran: \(refused.output)")
    #expect(refused.output.contains("nosuch"))
  }
}
