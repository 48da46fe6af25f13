import Foundation
import Glibc
import Testing

/// Targets at the edges of their lives, and ids that are not targets: a process killed
/// during an attach, one whose main thread has exited, a thread id, and the daemon's own
/// pid.
@Suite(.serialized, .needsRoot, .needsFixtures) struct TargetLifeTests {
  /// SIGKILL at a random instant of an attach: the daemon reaps what it traced, so the
  /// real parent (this test) sees the exit at once, and the attach answers `ok` (the
  /// kill came after the commit) or `process_exited`, never another code.
  @Test func aTargetKilledDuringAnAttachIsLetGoAndReportedAsExited() throws {
    let ws = Workspace()
    let patch = ws.patchFile("fix-compute", library: "libfix.so", functions: [("compute", "compute_v2")])
    _ = try ptraceWorker(ws)
    var generator = SystemRandomNumberGenerator()
    var codes: [String: Int] = [:]
    for round in 0..<30 {
      let target = try Fixture("threads", ["100", "4", "1"])
      #expect(target.waitForValue("compute", "42"))
      let env = ["SWPATCH_STATE_DIR": ws.stateDir, "SWPATCH_SOCKET": ws.socket]
      let (cli, output) = try spawn(Paths.swpatch, ["attach", "\(target.pid)", patch, "--json"], env: env)
      usleep(UInt32.random(in: 0..<60_000, using: &generator))
      kill(target.pid, SIGKILL)
      let killed = ContinuousClock.now
      // WNOWAIT: the zombie stays, so the daemon sees an exited process, not a free pid.
      var visible = false
      while ContinuousClock.now - killed < .seconds(2) {
        var info = siginfo_t()
        if waitid(P_PID, id_t(target.pid), &info, WEXITED | WNOWAIT | WNOHANG) == 0,
          info._sifields._sigchld.si_pid == target.pid
        {
          visible = true
          break
        }
        usleep(1000)
      }
      #expect(visible, "round \(round): the fixture's exit was not visible to its parent within 2 s")
      var data = Data()
      drain(output) { data.append(contentsOf: $0) }
      var status: Int32 = 0
      waitpid(cli, &status, 0)
      let json = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any]
      let code = json.map { ($0["error"] as? [String: Any])?["code"] as? String ?? "ok" } ?? "no json"
      codes[code, default: 0] += 1
      #expect(
        code == "ok" || code == "process_exited",
        "round \(round): \(String(decoding: data, as: UTF8.self))")
      target.stop()
      let listed = ws.swpatch("status", "--json")
      #expect(listed.status == 0, "\(listed.output)")
      let targets = try #require(listed.json?["targets"] as? [[String: Any]], "\(listed.output)")
      #expect(!targets.contains { $0["pid"] as? Int == Int(target.pid) }, "round \(round)")
    }
    #expect(codes["process_exited", default: 0] > 0, "no kill landed inside an attach: \(codes)")
  }

  /// The main thread calls pthread_exit after the patch went in; the worker runs on.
  @Test func aPatchOutlivesTheMainThreadAndCanBeDisabled() throws {
    let ws = Workspace()
    let target = try Fixture("mainexit", ["20", "wait"])
    #expect(target.waitForValue("compute", "42"))
    let patch = ws.patchFile("fix-compute", library: "libfix.so", functions: [("compute", "compute_v2")])
    let attach = ws.swpatch("attach", "\(target.pid)", patch)
    #expect(attach.status == 0, "\(attach.output)")
    #expect(target.waitForValue("compute", "63", from: target.output.count))
    kill(target.pid, SIGUSR1)
    #expect(target.output.wait { $0 == "main=exiting" } != nil)
    try expectMainThreadExited(target)
    #expect(target.waitForValue("compute", "63", from: target.output.count))
    let status = ws.swpatch("status", "\(target.pid)", "--json")
    let targets = try #require(status.json?["targets"] as? [[String: Any]], "\(status.output)")
    #expect(targets.contains { $0["pid"] as? Int == Int(target.pid) }, "\(status.output)")
    let disable = ws.swpatch("disable", "\(target.pid)", "fix-compute")
    #expect(disable.status == 0, "\(disable.output)")
    #expect(target.waitForValue("compute", "42", from: target.output.count))
    #expect(target.keepsRunning())
    #expect(liveThreadsAreUntraced(target.pid))
  }

  /// A process whose main thread exited before the attach is patched like any other:
  /// the live worker is stopped and borrowed, the zombie main thread is left alone.
  @Test func aTargetWhoseMainThreadExitedCanBeAttached() throws {
    let ws = Workspace()
    let target = try Fixture("mainexit", ["20"])
    #expect(target.output.wait { $0 == "main=exiting" } != nil)
    #expect(target.waitForValue("compute", "42"))
    try expectMainThreadExited(target)
    let patch = ws.patchFile("fix-compute", library: "libfix.so", functions: [("compute", "compute_v2")])
    let attach = ws.swpatch("attach", "\(target.pid)", patch)
    #expect(attach.status == 0, "\(attach.output)")
    #expect(target.waitForValue("compute", "63", from: target.output.count))
    let status = ws.swpatch("status", "--json")
    let targets = try #require(status.json?["targets"] as? [[String: Any]], "\(status.output)")
    #expect(targets.contains { $0["pid"] as? Int == Int(target.pid) }, "\(status.output)")
    #expect(target.keepsRunning())
    #expect(liveThreadsAreUntraced(target.pid))
  }

  /// A thread id is refused by every verb that takes a pid, naming the process, and
  /// the registry gets no entry for it.
  @Test func aThreadIDIsRefusedNamingItsProcess() throws {
    let ws = Workspace()
    let target = try Fixture("threads", ["100", "2"])
    #expect(target.waitForValue("compute", "42"))
    let tid = try #require(
      TestProcfs.threads(of: target.pid).first { $0 != target.pid }, "the fixture has no worker thread")
    let patch = ws.patchFile("fix-compute", library: "libfix.so", functions: [("compute", "compute_v2")])
    let expected = "thread \(tid) belongs to process \(target.pid); patch pid \(target.pid)"
    for args in [
      ["attach", "\(tid)", patch], ["enable", "\(tid)", "fix-compute"], ["disable", "\(tid)", "fix-compute"],
      ["status", "\(tid)"],
    ] {
      let text = ws.run(args)
      #expect(text.status == 1, "\(args): \(text.output)")
      #expect(text.output.contains(expected), "\(args): \(text.output)")
      let json = ws.run(args + ["--json"])
      let error = json.json?["error"] as? [String: Any]
      #expect(error?["code"] as? String == "not_a_process", "\(args): \(json.output)")
    }
    let status = ws.swpatch("status", "--json")
    let targets = try #require(status.json?["targets"] as? [[String: Any]], "\(status.output)")
    #expect(targets.isEmpty, "\(status.output)")
    #expect(target.keepsRunning())
    #expect(everyThreadIsUntraced(target.pid))
  }

  @Test func theDaemonRefusesToPatchItself() throws {
    let ws = Workspace()
    let daemon = try ptraceWorker(ws)
    let patch = ws.patchFile("fix-compute", library: "libfix.so", functions: [("compute", "compute_v2")])
    let text = ws.swpatch("attach", "\(daemon)", patch)
    #expect(text.status == 1, "\(text.output)")
    #expect(text.output.contains("pid \(daemon) is swpatchd itself"), "\(text.output)")
    let json = ws.swpatch("attach", "\(daemon)", patch, "--json")
    let error = json.json?["error"] as? [String: Any]
    #expect(error?["code"] as? String == "own_process", "\(json.output)")
    #expect(ws.swpatch("status").status == 0)
    #expect(ws.daemonPID == daemon)
  }
}

/// Reading /proc as a test sees it.
enum TestProcfs {
  static func threads(of pid: pid_t) -> [pid_t] {
    ((try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []).compactMap {
      pid_t($0)
    }.sorted()
  }

  /// Field 3 of /proc/PID/task/TID/stat.
  static func state(_ tid: pid_t, of pid: pid_t) -> Character? {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/task/\(tid)/stat", encoding: .utf8),
      let close = stat.lastIndex(of: ")")
    else { return nil }
    return stat[stat.index(after: close)...].first { $0 != " " }
  }
}

/// The fixture's main thread is a zombie and another thread still runs.
func expectMainThreadExited(_ target: Fixture, sourceLocation: SourceLocation = #_sourceLocation) throws {
  var state: Character?
  for _ in 0..<200 {
    state = TestProcfs.state(target.pid, of: target.pid)
    if state == "Z" { break }
    usleep(10_000)
  }
  #expect(state == "Z", "main thread state \(String(describing: state))", sourceLocation: sourceLocation)
  let others = TestProcfs.threads(of: target.pid).filter { $0 != target.pid }
  #expect(!others.isEmpty, "no thread left", sourceLocation: sourceLocation)
}

/// True when some thread of `pid` runs and no thread that runs has a tracer or sits in
/// a tracing stop (`everyThreadIsUntraced` counts a process whose main thread is a
/// zombie as gone).
func liveThreadsAreUntraced(_ pid: pid_t) -> Bool {
  let live = TestProcfs.threads(of: pid).filter {
    let state = TestProcfs.state($0, of: pid)
    return state != nil && state != "Z" && state != "X"
  }
  return !live.isEmpty
    && live.allSatisfy { tid in
      guard let status = try? String(contentsOfFile: "/proc/\(pid)/task/\(tid)/status", encoding: .utf8)
      else { return true }
      return status.contains("TracerPid:\t0\n") && !status.contains("State:\tt")
    }
}
