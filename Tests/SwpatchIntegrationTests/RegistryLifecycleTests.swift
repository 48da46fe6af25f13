import Foundation
import Glibc
import Testing

/// The registry across commands: exited targets, the lock, dry runs, hung loads.
@Suite(.serialized, .needsRoot, .needsFixtures) struct RegistryLifecycleTests {
  @Test func exitedTargetIsDroppedAndStatusSaysSo() throws {
    let ws = Workspace()
    let target = try Fixture("loop", ["20"])
    #expect(target.waitForValue("foo", "100"))
    let patch = ws.patchFile("p1", library: "libp1.so", functions: [("foo", "foo_p1")])
    #expect(ws.swpatch("attach", "\(target.pid)", patch).status == 0)
    #expect(ws.swpatch("status").output.contains("pid \(target.pid)"))
    target.stop()
    let status = ws.swpatch("status", "--json")
    #expect(status.status == 0)
    #expect((status.json?["targets"] as? [Any])?.isEmpty == true)
    #expect(status.json?["dropped"] as? [Int] == [Int(target.pid)])
    let again = ws.swpatch("status")
    #expect(again.output.contains("no patched targets"))
    #expect(!again.output.contains("exited"))  // dropped once, reported once
  }

  @Test func concurrentCommandsDoNotLoseEachOthersChanges() throws {
    let ws = Workspace()
    let targets = try (0..<3).map { _ in try Fixture("loop", ["20"]) }
    for target in targets { #expect(target.waitForValue("foo", "100")) }
    let patch = ws.patchFile("p1", library: "libp1.so", functions: [("foo", "foo_p1")])
    let results = LineBuffer()
    let threads = targets.map { target in
      Thread {
        results.append("\(ws.swpatch("attach", "\(target.pid)", patch).status)")
      }
    }
    threads.forEach { $0.start() }
    #expect(results.wait(from: 2, timeout: 30) { _ in true } != nil)
    #expect(results.all == ["0", "0", "0"])
    let json = try #require(ws.swpatch("status", "--json").json)
    let pids = ((json["targets"] as? [[String: Any]]) ?? []).compactMap { $0["pid"] as? Int }
    #expect(Set(pids) == Set(targets.map { Int($0.pid) }))
    for target in targets { #expect(target.waitForValue("foo", "101", from: target.output.count)) }
  }

  @Test func dryRunDisableAndEnableChangeNothing() throws {
    let ws = Workspace()
    let target = try Fixture("loop", ["20"])
    #expect(target.waitForValue("foo", "100"))
    let patch = ws.patchFile("p1", library: "libp1.so", functions: [("foo", "foo_p1")])
    #expect(ws.swpatch("attach", "\(target.pid)", patch).status == 0)
    let registry = try String(contentsOfFile: ws.stateDir + "/registry.json", encoding: .utf8)
    let foo = try address(of: "foo", in: target, workspace: ws)
    let entry = target.memory(at: foo, count: 8)
    let dry = ws.swpatch("disable", "\(target.pid)", "p1", "--dry-run")
    #expect(dry.status == 0)
    #expect(dry.output.contains("restore original bytes"), "\(dry.output)")
    #expect(try String(contentsOfFile: ws.stateDir + "/registry.json", encoding: .utf8) == registry)
    #expect(target.memory(at: foo, count: 8) == entry)
    #expect(target.waitForValue("foo", "101", from: target.output.count))
    #expect(ws.swpatch("disable", "\(target.pid)", "p1").status == 0)
    let dryEnable = ws.swpatch("enable", "\(target.pid)", "p1", "--dry-run", "--json")
    #expect(dryEnable.json?["dry_run"] as? Bool == true)
    #expect(target.waitForValue("foo", "100", from: target.output.count))
  }

  @Test func hungLibraryLoadIsAbandonedAndTheTargetKeepsRunning() throws {
    let ws = Workspace()
    let target = try Fixture("loop", ["20"])
    #expect(target.waitForValue("compute", "42"))
    let compute = try address(of: "compute", in: target, workspace: ws)
    let before = target.memory(at: compute, count: 16)
    let patch = ws.patchFile("hang", library: "libhang.so", functions: [("compute", "compute_hang")])
    let result = ws.swpatch("attach", "\(target.pid)", patch, "--load-timeout", "1", "--allow-constructors")
    #expect(result.status == 1)
    #expect(result.output.contains("did not return within 1.0 s"), "\(result.output)")
    #expect(target.memory(at: compute, count: 16) == before)
    // The borrowed thread was restored: the loop goes on printing the old value.
    #expect(target.keepsRunning(lines: 5))
    #expect(target.output.all.last?.contains("compute=42") == true)
    #expect(ws.swpatch("status", "--json").json?["targets"] as? [Any] != nil)
  }
}
