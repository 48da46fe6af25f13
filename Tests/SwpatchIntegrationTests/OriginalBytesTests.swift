import Foundation
import Glibc
import Testing

/// A hook's original bytes are the object file's bytes, never whatever the entry held:
/// a fork of a patched process, another tool's write, and an `execve` each show why.
@Suite(.serialized, .needsRoot, .needsFixtures) struct OriginalBytesTests {
  func fix(_ ws: Workspace) -> String {
    ws.patchFile("fix-compute", library: "libfix.so", functions: [("compute", "compute_v2")])
  }

  /// Waits for a line `who=PID compute=VALUE` after `from`.
  func prints(_ target: Fixture, _ pid: pid_t, _ value: Int, from: Int) -> Bool {
    target.output.wait(from: from) { $0 == "who=\(pid) compute=\(value)" } != nil
  }

  /// Stops a process that is not the test's child (the fixture reaps it) by pid.
  func stopGrandchild(_ pid: pid_t) {
    kill(pid, SIGTERM)
    for _ in 0..<300 where processExists(pid) { usleep(10_000) }
    if processExists(pid) { kill(pid, SIGKILL) }
  }

  /// A forker patched with fix-compute, then made to fork: the parent and its child.
  func patchedParentThatForked(_ ws: Workspace) throws -> (parent: Fixture, child: pid_t) {
    let parent = try Fixture("forker", ["20"])
    #expect(prints(parent, parent.pid, 42, from: 0))
    #expect(ws.swpatch("attach", "\(parent.pid)", fix(ws)).status == 0)
    #expect(prints(parent, parent.pid, 63, from: parent.output.count))
    kill(parent.pid, SIGUSR1)
    let line = try #require(parent.output.wait { $0.hasPrefix("child=") }?.1)
    return (parent, try #require(pid_t(line.dropFirst("child=".count))))
  }

  @Test func aForkedChildIsAdoptedAndItsDisableRestoresTheOriginal() throws {
    let ws = Workspace()
    let (parent, child) = try patchedParentThatForked(ws)
    defer { stopGrandchild(child) }
    #expect(prints(parent, child, 63, from: 0))
    // The child's entry holds the parent's jump: swpatch must know it as patched, not
    // take the jump for the function's original bytes.
    let stacked = ws.patchFile(
      "sameid-a", library: "libsameid-a.so", functions: [("compute", "compute_sameid")])
    let attach = ws.swpatch("attach", "\(child)", stacked)
    #expect(attach.status == 0, "\(attach.output)")
    #expect(prints(parent, child, 147, from: parent.output.count))
    let status = try #require(ws.swpatch("status", "--json").json)
    let targets = try #require(status["targets"] as? [[String: Any]])
    let adopted = try #require(targets.first { ($0["pid"] as? Int) == Int(child) }, "\(status)")
    #expect(adopted["inherited_from"] as? Int == Int(parent.pid))
    let patches = try #require(adopted["patches"] as? [[String: Any]])
    #expect(patches.compactMap { $0["id"] as? String } == ["fix-compute", "sameid-a"])
    for (id, expected) in [("sameid-a", 63), ("fix-compute", 42)] {
      let result = ws.swpatch("disable", "\(child)", id)
      #expect(result.status == 0, "\(result.output)")
      #expect(prints(parent, child, expected, from: parent.output.count), "\(parent.output.all.suffix(4))")
    }
    // The parent is untouched by what was done to its child.
    #expect(prints(parent, parent.pid, 63, from: parent.output.count))
  }

  /// The daemon follows forks by itself: within a second of the fork, `status` lists
  /// the child as a target inherited from its parent, before anyone names it.
  @Test func aForkedChildIsListedAsInheritedWithinASecond() throws {
    let ws = Workspace()
    let forked = ContinuousClock.now
    let (parent, child) = try patchedParentThatForked(ws)
    defer { stopGrandchild(child) }
    var listed: [String: Any]?
    while listed == nil && ContinuousClock.now - forked < .seconds(3) {
      let targets = ws.swpatch("status", "--json").json?["targets"] as? [[String: Any]] ?? []
      listed = targets.first { ($0["pid"] as? Int) == Int(child) }
      if listed == nil { usleep(20_000) }
    }
    let seenAfter = ContinuousClock.now - forked
    let entry = try #require(listed, "the child never appeared in status")
    #expect(seenAfter < .seconds(1), "listed only after \(seenAfter)")
    #expect(entry["inherited_from"] as? Int == Int(parent.pid))
    #expect(ws.swpatch("status").output.contains("inherited from pid \(parent.pid)"))
    #expect(ws.swpatch("log", "--pid", "\(child)", "--json").output.contains(#""operation":"fork""#))
    // Disabled in the child, the fix leaves the child only; the parent stays patched.
    let disable = ws.swpatch("disable", "\(child)", "fix-compute")
    #expect(disable.status == 0, "\(disable.output)")
    #expect(prints(parent, child, 42, from: parent.output.count))
    #expect(prints(parent, parent.pid, 63, from: parent.output.count))
  }

  @Test func anEntryAnotherToolWroteIsRefusedAndLeftAlone() throws {
    let ws = Workspace()
    let target = try Fixture("loop", ["20"])
    #expect(target.waitForValue("compute", "42"))
    let compute = try address(of: "compute", in: target, workspace: ws)
    let pristine = target.memory(at: compute, count: 16)
    // Held in a job-control stop while its entry holds a breakpoint, as a debugger
    // would leave it; the patch must not record 0xcc as the original.
    kill(target.pid, SIGSTOP)
    let mem = open("/proc/\(target.pid)/mem", O_RDWR)
    #expect(mem >= 0)
    defer { close(mem) }
    var int3: UInt8 = 0xcc
    #expect(pwrite(mem, &int3, 1, off_t(compute)) == 1)
    let modified = target.memory(at: compute, count: 16)
    let result = ws.swpatch("attach", "\(target.pid)", fix(ws), "--json")
    #expect(result.status == 1)
    let error = result.json?["error"] as? [String: Any]
    #expect(error?["code"] as? String == "entry_modified", "\(result.output)")
    #expect((error?["message"] as? String)?.contains("cc") == true)
    #expect(target.memory(at: compute, count: 16) == modified)
    #expect(ws.swpatch("status", "--json").json?["targets"] as? [Any] != nil)
    #expect((ws.swpatch("status", "--json").json?["targets"] as? [Any])?.isEmpty == true)
    // Put back, the same patch goes in and comes out to the object's bytes.
    #expect(pwrite(mem, pristine, 1, off_t(compute)) == 1)
    kill(target.pid, SIGCONT)
    #expect(ws.swpatch("attach", "\(target.pid)", fix(ws)).status == 0)
    #expect(target.waitForValue("compute", "63", from: target.output.count))
    #expect(ws.swpatch("disable", "\(target.pid)", "fix-compute").status == 0)
    #expect(target.memory(at: compute, count: 16) == pristine)
  }

  @Test func theEntriesOfAProgramThatRanExecveAreDropped() throws {
    let ws = Workspace()
    let target = try Fixture("execer", [Paths.fixture("loop"), "20"])
    #expect(target.output.wait { $0 == "before-exec compute=42" } != nil)
    #expect(ws.swpatch("attach", "\(target.pid)", fix(ws)).status == 0)
    #expect(target.output.wait(from: target.output.count) { $0 == "before-exec compute=63" } != nil)
    let start = target.output.count
    kill(target.pid, SIGUSR1)
    #expect(target.output.wait(from: start) { $0.hasPrefix("tick=") && $0.contains(" compute=42 ") } != nil)
    // Same pid, same start time, another program: nothing of the old entry applies.
    let status = try #require(ws.swpatch("status", "--json").json)
    #expect((status["targets"] as? [Any])?.isEmpty == true, "\(status)")
    // The daemon notices by itself (no pidfd fires for execve) and audits the drop.
    var audited = false
    for _ in 0..<40 where !audited {
      let log = ws.swpatch("log", "--pid", "\(target.pid)", "--json").output
      audited = log.contains(#""operation":"exec""#)
      if !audited { usleep(100_000) }
    }
    #expect(audited, "no exec line in the audit log")
    let attach = ws.swpatch("attach", "\(target.pid)", fix(ws))
    #expect(attach.status == 0, "\(attach.output)")
    #expect(target.waitForValue("compute", "63", from: target.output.count))
    #expect(target.keepsRunning(lines: 5))
    #expect(ws.swpatch("disable", "\(target.pid)", "fix-compute").status == 0)
    #expect(target.waitForValue("compute", "42", from: target.output.count))
  }

  @Test func aLibraryThatRunsCodeWhenLoadedIsRefusedUnlessAllowed() throws {
    for (library, function, constructor) in [
      ("libctor.so", "compute_ctor", "boom"), ("libhang.so", "compute_hang", "hang"),
    ] {
      let ws = Workspace()
      let target = try Fixture("loop", ["20"])
      #expect(target.waitForValue("compute", "42"))
      let compute = try address(of: "compute", in: target, workspace: ws)
      let patch = ws.patchFile("ctor", library: library, functions: [("compute", function)])
      try expectRefusedAttach(
        target, ws, patch, code: "library_has_constructors",
        mentions: [constructor, "--allow-constructors"], watch: compute)
    }
  }
}
