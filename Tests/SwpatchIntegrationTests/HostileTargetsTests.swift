import Foundation
import Glibc
import Testing

/// Targets that make themselves hard to patch (issue 18): a systemd-style seccomp filter,
/// one that kills on `mmap`, `PR_SET_DUMPABLE 0`, a set-uid program, a PID namespace.
/// Each is patched safely or refused with nothing changed; docs/design.md ("Never hurting
/// the target") says which.
@Suite(.serialized, .needsRoot, .needsFixtures) struct HostileTargetsTests {
  /// systemd's `MemoryDenyWriteExecute=yes` filter does not stop the attach (the filter
  /// is suspended while the target is seized, and nothing swpatch maps is write+exec
  /// anyway), and it is back in force once the target runs again.
  @Test func memoryDenyWriteExecuteIsPatchedAndKeepsItsFilter() throws {
    let ws = Workspace()
    let target = try Fixture("seccomp-mdwe", ["mdwe"])
    #expect(target.waitForValue("compute", "42"))
    let patch = ws.patchFile("fix-compute", library: "libfix.so", functions: [("compute", "compute_v2")])
    let attach = ws.swpatch("attach", "\(target.pid)", patch)
    #expect(attach.status == 0, "\(attach.output)")
    #expect(target.waitForValue("compute", "63", from: target.output.count))
    #expect(everyThreadIsUntraced(target.pid))
    let maps = try String(contentsOfFile: "/proc/\(target.pid)/maps", encoding: .utf8)
    let writableCode = maps.split(separator: "\n").filter { line in
      let perms = Array(line.split(separator: " ")[1])
      return perms[1] == "w" && perms[2] == "x"
    }
    #expect(writableCode.isEmpty, "write+exec mappings: \(writableCode)")
    let seen = target.output.count
    kill(target.pid, SIGUSR1)
    let probe = target.output.wait(from: seen) { $0.hasPrefix("wx=") }
    #expect(probe?.1 == "wx=EPERM", "the filter no longer holds: \(String(describing: probe))")
    let disable = ws.swpatch("disable", "\(target.pid)", "fix-compute")
    #expect(disable.status == 0, "\(disable.output)")
    #expect(target.waitForValue("compute", "42", from: target.output.count))
    #expect(target.keepsRunning())
  }

  /// A filter that kills on any `mmap` or `memfd_create`: the remote `mmap` of the
  /// trampoline page and the library's memfd run while the filter is suspended, so the
  /// target is patched and lives on, filtered again.
  @Test func aFilterThatKillsOnMmapIsSuspendedWhileThePatchGoesIn() throws {
    try expectPatchedUnderItsFilter(try Fixture("seccomp-mdwe", ["kill-mmap"]))
  }

  /// `PR_SET_DUMPABLE 0` keeps other users out, not root: root patches it like any other.
  @Test func aProcessThatIsNotDumpableIsPatchedByRoot() throws {
    let ws = Workspace()
    let target = try Fixture("undumpable")
    #expect(target.output.wait { $0.hasSuffix("dumpable=0") } != nil)
    #expect(target.waitForValue("compute", "42"))
    let patch = ws.patchFile("fix-compute", library: "libfix.so", functions: [("compute", "compute_v2")])
    let attach = ws.swpatch("attach", "\(target.pid)", patch)
    #expect(attach.status == 0, "\(attach.output)")
    #expect(target.waitForValue("compute", "63", from: target.output.count))
    let disable = ws.swpatch("disable", "\(target.pid)", "fix-compute")
    #expect(disable.status == 0, "\(disable.output)")
    #expect(target.waitForValue("compute", "42", from: target.output.count))
    #expect(target.keepsRunning())
    #expect(everyThreadIsUntraced(target.pid))
  }

  /// A process of nobody's that made itself not dumpable, and a set-uid-root program
  /// nobody started: nobody may patch neither (`permission_denied`, the code bytes
  /// unchanged), root may patch both.
  @Test func onlyRootPatchesAnUndumpableOrSetUIDProcess() throws {
    let ws = Workspace()
    ws.environment["SWPATCH_SOCKET_GROUP"] = "65534"
    let nobody = ["/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    #expect(ws.swpatch("status").status == 0)  // root starts the daemon
    let setuid = ws.directory + "/loop-setuid"
    try FileManager.default.copyItem(atPath: Paths.fixture("loop"), toPath: setuid)
    #expect(chown(setuid, 0, 0) == 0)
    #expect(chmod(setuid, 0o4755) == 0)
    let undumpable = try Fixture(path: nobody[0], Array(nobody.dropFirst()) + [Paths.fixture("undumpable")])
    let setuidTarget = try Fixture(path: nobody[0], Array(nobody.dropFirst()) + [setuid, "20"])
    #expect(undumpable.waitForValue("compute", "42"))
    #expect(setuidTarget.waitForValue("compute", "42"))
    let ids = try String(contentsOfFile: "/proc/\(setuidTarget.pid)/status", encoding: .utf8)
    #expect(ids.contains("Uid:\t65534\t0\t0\t0"), "not a set-uid process started by nobody: \(ids)")
    let patch = ws.patchFile("fix", library: "libfix.so", functions: [("compute", "compute_v2")])
    for (target, reason) in [(undumpable, "not dumpable"), (setuidTarget, "set-uid")] {
      let compute = try address(of: "compute", in: target, workspace: ws)
      let before = target.memory(at: compute, count: 32)
      #expect(before.count == 32)
      let refused = ws.run(["attach", "\(target.pid)", patch], prefix: nobody)
      #expect(refused.status == 1, "\(refused.output)")
      #expect(refused.output.contains(reason), "\(refused.output)")
      let json = ws.run(["attach", "\(target.pid)", patch, "--json"], prefix: nobody)
      #expect(
        (json.json?["error"] as? [String: Any])?["code"] as? String == "permission_denied", "\(json.output)")
      #expect(target.memory(at: compute, count: 32) == before, "a refusal changed the code")
      #expect(target.keepsRunning())
      #expect(everyThreadIsUntraced(target.pid))
      let allowed = ws.swpatch("attach", "\(target.pid)", patch)
      #expect(allowed.status == 0, "\(allowed.output)")
      #expect(target.waitForValue("compute", "63", from: target.output.count))
    }
    let mine = ws.run(["status", "--json"], prefix: nobody).json?["targets"] as? [[String: Any]]
    #expect(mine?.isEmpty == true, "nobody sees processes it may not patch: \(String(describing: mine))")
  }

  /// A zombie main thread's /proc files are root's, like a non-dumpable process's: the
  /// user whose process it is may still patch it (its live threads' files are theirs).
  @Test func aUserPatchesTheirOwnProcessWhoseMainThreadExited() throws {
    let ws = Workspace()
    ws.environment["SWPATCH_SOCKET_GROUP"] = "65534"
    let nobody = ["/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    #expect(ws.swpatch("status").status == 0)  // root starts the daemon
    let target = try Fixture(path: nobody[0], Array(nobody.dropFirst()) + [Paths.fixture("mainexit"), "20"])
    #expect(target.output.wait { $0 == "main=exiting" } != nil)
    #expect(target.waitForValue("compute", "42"))
    try expectMainThreadExited(target)
    var owner = stat()
    #expect(stat("/proc/\(target.pid)/task/\(target.pid)/status", &owner) == 0)
    #expect(owner.st_uid == 0, "a zombie thread's files are no longer root's: the test proves nothing")
    let patch = ws.patchFile("fix", library: "libfix.so", functions: [("compute", "compute_v2")])
    let attach = ws.run(["attach", "\(target.pid)", patch], prefix: nobody)
    #expect(attach.status == 0, "\(attach.output)")
    #expect(target.waitForValue("compute", "63", from: target.output.count))
    let mine = ws.run(["status", "--json"], prefix: nobody).json?["targets"] as? [[String: Any]]
    #expect(mine?.compactMap { $0["pid"] as? Int } == [Int(target.pid)])
    #expect(target.keepsRunning())
    #expect(liveThreadsAreUntraced(target.pid))
  }

  /// A target in its own PID namespace (pid 1 there) is named by its host pid, the one
  /// `ps` shows the operator; `status` shows that pid.
  @Test func aTargetInItsOwnPIDNamespaceIsNamedByItsHostPID() throws {
    let ws = Workspace()
    let wrapper = try Fixture(
      path: "/usr/bin/unshare", ["--pid", "--fork", "--kill-child=SIGTERM", Paths.fixture("loop"), "20"])
    #expect(wrapper.output.wait { $0 == "pid=1" } != nil, "the target is not pid 1 of a new namespace")
    let children = try String(
      contentsOfFile: "/proc/\(wrapper.pid)/task/\(wrapper.pid)/children", encoding: .utf8)
    let hostPID = try #require(
      children.split(separator: " ").compactMap { pid_t($0) }.first, "unshare has no child")
    defer { kill(hostPID, SIGTERM) }  // unshare ignores SIGTERM while it waits; it reaps the child
    let nsStatus = try String(contentsOfFile: "/proc/\(hostPID)/status", encoding: .utf8)
    #expect(nsStatus.contains("NSpid:\t\(hostPID)\t1\n"), "\(nsStatus)")
    #expect(wrapper.waitForValue("compute", "42"))
    let patch = ws.patchFile("fix-compute", library: "libfix.so", functions: [("compute", "compute_v2")])
    let attach = ws.swpatch("attach", "\(hostPID)", patch)
    #expect(attach.status == 0, "\(attach.output)")
    #expect(wrapper.waitForValue("compute", "63", from: wrapper.output.count))
    let status = ws.swpatch("status", "--json")
    let targets = try #require(status.json?["targets"] as? [[String: Any]], "\(status.output)")
    #expect(targets.map { $0["pid"] as? Int } == [Int(hostPID)], "\(status.output)")
    let disable = ws.swpatch("disable", "\(hostPID)", "fix-compute")
    #expect(disable.status == 0, "\(disable.output)")
    #expect(wrapper.waitForValue("compute", "42", from: wrapper.output.count))
    #expect(everyThreadIsUntraced(hostPID))
  }
}
