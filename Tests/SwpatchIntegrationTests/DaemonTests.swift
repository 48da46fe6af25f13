import Foundation
import Glibc
import SwpatchBase
import Testing

/// Sends raw bytes to the workspace's daemon and returns what comes back before the
/// daemon closes the connection or `timeout` passes.
func rawExchange(_ ws: Workspace, _ bytes: [UInt8], closeAfterSend: Bool = false, timeout: Int = 5) -> String
{
  let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
  defer { close(fd) }
  var address = sockaddr_un()
  address.sun_family = sa_family_t(AF_UNIX)
  withUnsafeMutableBytes(of: &address.sun_path) { raw in
    let path = Array(ws.socket.utf8)
    raw.copyBytes(from: path)
    raw[path.count] = 0
  }
  let connected = withUnsafePointer(to: &address) {
    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
      connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
    }
  }
  guard connected == 0 else { return "connect failed" }
  var tv = timeval(tv_sec: timeout, tv_usec: 0)
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
  var offset = 0
  while offset < bytes.count {
    let n = bytes.withUnsafeBytes {
      send(fd, $0.baseAddress! + offset, $0.count - offset, Int32(MSG_NOSIGNAL))
    }
    if n <= 0 { break }
    offset += n
  }
  if closeAfterSend { return "" }
  shutdown(fd, Int32(SHUT_WR))
  var data = Data()
  var chunk = [UInt8](repeating: 0, count: 4096)
  while true {
    let n = recv(fd, &chunk, chunk.count, 0)
    if n <= 0 { break }
    data.append(contentsOf: chunk[0..<n])
  }
  return String(decoding: data, as: UTF8.self)
}

func line(_ text: String) -> [UInt8] { Array((text + "\n").utf8) }

/// The error code of a response line.
func errorCode(of response: String) -> String? {
  let first = response.split(separator: "\n").first.map(String.init) ?? ""
  let json = (try? JSONSerialization.jsonObject(with: Data(first.utf8))) as? [String: Any]
  return (json?["error"] as? [String: Any])?["code"] as? String
}

/// swpatchd: driven through the CLI and the raw socket, stopped by each workspace.
@Suite(.serialized, .needsRoot, .needsFixtures) struct DaemonTests {
  @Test func cliStartsADaemonThatStopsCleanlyOnSigterm() throws {
    let ws = Workspace()
    let target = try Fixture("loop", ["20"])
    #expect(target.waitForValue("compute", "42"))
    let patch = ws.patchFile("fix", library: "libfix.so", functions: [("compute", "compute_v2")])
    #expect(ws.swpatch("attach", "\(target.pid)", patch).status == 0)
    let daemon = try #require(ws.daemonPID)
    #expect(processExists(daemon))
    var info = stat()
    #expect(stat(ws.socket, &info) == 0)
    #expect(info.st_mode & 0o777 == 0o600, "socket mode \(String(info.st_mode & 0o777, radix: 8))")
    kill(daemon, SIGTERM)
    for _ in 0..<300 where processExists(daemon) { usleep(10_000) }
    #expect(!processExists(daemon))
    #expect(!FileManager.default.fileExists(atPath: ws.socket))
    #expect(!FileManager.default.fileExists(atPath: ws.stateDir + "/swpatchd.pid"))
    // The patch stays live without the daemon.
    #expect(target.waitForValue("compute", "63", from: target.output.count))
  }

  @Test func aDaemonWhoseSocketIsRemovedStops() throws {
    let ws = Workspace()
    #expect(ws.swpatch("status").status == 0)
    let daemon = try #require(ws.daemonPID)
    unlink(ws.socket)  // nobody can reach it any more
    for _ in 0..<500 where processExists(daemon) { usleep(10_000) }
    #expect(!processExists(daemon), "the unreachable daemon is still running")
    #expect(!FileManager.default.fileExists(atPath: ws.stateDir + "/swpatchd.pid"))
  }

  @Test func statusAndDisableWorkAfterTheDaemonIsKilled() throws {
    let ws = Workspace()
    let target = try Fixture("loop", ["20"])
    #expect(target.waitForValue("compute", "42"))
    let patch = ws.patchFile("fix", library: "libfix.so", functions: [("compute", "compute_v2")])
    #expect(ws.swpatch("attach", "\(target.pid)", patch).status == 0)
    let before = try #require(ws.swpatch("status", "--json").json?["targets"] as? [[String: Any]])
    let first = try #require(ws.daemonPID)
    kill(first, SIGKILL)
    for _ in 0..<300 where processExists(first) { usleep(10_000) }
    let after = ws.swpatch("status", "--json")
    #expect(after.status == 0, "\(after.output)")
    #expect(ws.daemonPID != first)
    let targets = try #require(after.json?["targets"] as? [[String: Any]])
    #expect(NSDictionary(dictionary: ["t": targets]) == NSDictionary(dictionary: ["t": before]))
    let disable = ws.swpatch("disable", "\(target.pid)", "fix")
    #expect(disable.status == 0, "\(disable.output)")
    #expect(target.waitForValue("compute", "42", from: target.output.count))
  }

  @Test func aKilledTargetLeavesStatusWithinASecondWithAnAuditLine() throws {
    let ws = Workspace()
    let target = try Fixture("loop", ["20"])
    #expect(target.waitForValue("compute", "42"))
    let patch = ws.patchFile("fix", library: "libfix.so", functions: [("compute", "compute_v2")])
    #expect(ws.swpatch("attach", "\(target.pid)", patch).status == 0)
    kill(target.pid, SIGKILL)  // not reaped yet: a zombie must not count as patched
    let deadline = Date().addingTimeInterval(1)
    var gone = false
    while !gone && Date() < deadline {
      let targets = ws.swpatch("status", "--json").json?["targets"] as? [[String: Any]]
      gone = targets?.isEmpty == true
    }
    #expect(gone, "the killed target is still in status after 1 s")
    let log = ws.swpatch("log", "--pid", "\(target.pid)", "--json")
    let records = try #require(
      (try? JSONSerialization.jsonObject(with: Data(log.output.utf8))) as? [[String: Any]])
    #expect(records.map { $0["operation"] as? String } == ["attach", "exit"])
    #expect(records.last?["result"] as? String == "dropped")
    #expect(records.first?["uid"] as? Int == 0)
    #expect(records.first?["stopped_us"] is Int)
  }

  @Test func anUnprivilegedCallerMayPatchOnlyItsOwnProcess() throws {
    let ws = Workspace()
    ws.environment["SWPATCH_SOCKET_GROUP"] = "65534"
    let nobody = ["/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    // Without a daemon an unprivileged caller cannot start one, and says so.
    let early = ws.run(["status"], prefix: nobody)
    #expect(early.status == 1)
    #expect(early.output.contains("no swpatch daemon answers"), "\(early.output)")
    #expect(ws.swpatch("status").status == 0)  // root starts it
    let rootTarget = try Fixture("loop", ["20"])
    let ownTarget = try Fixture(path: nobody[0], Array(nobody.dropFirst()) + [Paths.fixture("loop"), "20"])
    #expect(rootTarget.waitForValue("compute", "42"))
    #expect(ownTarget.waitForValue("compute", "42"))
    let patch = ws.patchFile("fix", library: "libfix.so", functions: [("compute", "compute_v2")])
    let refused = ws.run(["attach", "\(rootTarget.pid)", patch, "--json"], prefix: nobody)
    #expect(refused.status == 1)
    #expect((refused.json?["error"] as? [String: Any])?["code"] as? String == "permission_denied")
    #expect(rootTarget.waitForValue("compute", "42", from: rootTarget.output.count))
    let allowed = ws.run(["attach", "\(ownTarget.pid)", patch], prefix: nobody)
    #expect(allowed.status == 0, "\(allowed.output)")
    #expect(ownTarget.waitForValue("compute", "63", from: ownTarget.output.count))
    // status shows nobody its own process only; root sees it too.
    let mine = ws.run(["status", "--json"], prefix: nobody).json?["targets"] as? [[String: Any]]
    #expect(mine?.compactMap { $0["pid"] as? Int } == [Int(ownTarget.pid)])
    let log = ws.swpatch("log", "--json")
    #expect(log.output.contains("\"result\":\"refused\""))
  }

  @Test func twentyConcurrentClientsOnTwoTargetsAgreeWithMemory() throws {
    let ws = Workspace()
    let targets = try (0..<2).map { _ in try Fixture("loop", ["10"]) }
    let patch = ws.patchFile("fix", library: "libfix.so", functions: [("compute", "compute_v2")])
    for target in targets {
      #expect(target.waitForValue("compute", "42"))
      #expect(ws.swpatch("attach", "\(target.pid)", patch).status == 0)
    }
    let results = LineBuffer()
    for client in 0..<20 {
      Thread {
        let target = targets[client % 2]
        let args: [String]
        switch client % 5 {
        case 0, 1: args = ["status", "--json"]
        case 2, 3: args = ["disable", "\(target.pid)", "fix", "--json"]
        default: args = ["enable", "\(target.pid)", "fix", "--json"]
        }
        let result = ws.run(args)
        // "already enabled/disabled" is a correct answer when another client got there first.
        let code = (result.json?["error"] as? [String: Any])?["code"] as? String
        let good =
          (result.status == 0 && result.json != nil)
          || (result.status == 1 && ["already_enabled", "already_disabled"].contains(code))
        results.append(good ? "ok" : "bad \(args) \(result.status) \(result.output)")
      }.start()
    }
    #expect(results.wait(from: 19, timeout: 120) { _ in true } != nil)
    #expect(results.all.filter { $0 != "ok" } == [])
    // The final registry matches what each target runs.
    let status = try #require(ws.swpatch("status", "--json").json?["targets"] as? [[String: Any]])
    #expect(status.count == 2)
    for entry in status {
      let pid = try #require(entry["pid"] as? Int)
      let target = try #require(targets.first { Int($0.pid) == pid })
      let patches = try #require(entry["patches"] as? [[String: Any]])
      let enabled = patches.first?["state"] as? String == "enabled"
      let hooks = try #require(entry["hooks"] as? [[String: Any]], "status lost its 'hooks' key")
      #expect(hooks.allSatisfy { $0["drift"] == nil })
      #expect(target.waitForValue("compute", enabled ? "63" : "42", from: target.output.count))
    }
  }

  @Test func malformedRequestsGetErrorsAndTheDaemonServesOn() throws {
    let ws = Workspace()
    #expect(ws.swpatch("status").status == 0)
    #expect(errorCode(of: rawExchange(ws, line("this is not json"))) == "bad_request")
    #expect(errorCode(of: rawExchange(ws, line(#"{"op":"status"}"#))) == "bad_request")
    #expect(errorCode(of: rawExchange(ws, line(#"{"v":2,"op":"status"}"#))) == "bad_version")
    #expect(errorCode(of: rawExchange(ws, line(#"{"v":1,"op":"explode"}"#))) == "unknown_operation")
    #expect(errorCode(of: rawExchange(ws, line(#"{"v":1,"op":"attach"}"#))) == "bad_request")
    #expect(
      errorCode(of: rawExchange(ws, line(#"{"v":1,"op":"disable","pid":"one","patch_id":"x"}"#)))
        == "bad_request")
    #expect(errorCode(of: rawExchange(ws, line(#"{"v":1,"op":"enable","pid":1}"#))) == "bad_request")
    #expect(errorCode(of: rawExchange(ws, [0xff, 0xfe, 0x00, 0x0a])) == "bad_request")
    // Over 1 MiB without a newline: an error and a closed connection, not a buffer forever.
    let huge = [UInt8](repeating: 0x61, count: (1 << 20) + 4096)
    let oversize = rawExchange(ws, huge)
    #expect(errorCode(of: oversize) == "request_too_large" || oversize.isEmpty)
    // A client that goes away mid-request, and one that goes away before its answer.
    _ = rawExchange(ws, Array(#"{"v":1,"op":"sta"#.utf8), closeAfterSend: true)
    _ = rawExchange(ws, line(#"{"v":1,"op":"status"}"#), closeAfterSend: true)
    // Several requests on one connection are answered in order.
    let two = rawExchange(ws, line(#"{"v":1,"op":"ping"}"#) + line(#"{"v":1,"op":"status"}"#))
    let answers = two.split(separator: "\n")
    #expect(answers.count == 2)
    #expect(answers.first?.contains("\"state_dir\"") == true)
    let status = ws.swpatch("status")
    #expect(status.status == 0)
    #expect(status.output.contains("no patched targets"))
  }

  @Test func aTargetThatExitsDuringTheLoadIsReportedAndTheDaemonServesOn() throws {
    let ws = Workspace()
    let target = try Fixture("loop", ["20"])
    #expect(target.waitForValue("compute", "42"))
    let patch = ws.patchFile("hang", library: "libhang.so", functions: [("compute", "compute_hang")])
    let killer = Thread {
      usleep(700_000)  // the remote dlopen is sleeping in the library's constructor
      kill(target.pid, SIGKILL)
    }
    killer.start()
    let result = ws.swpatch("attach", "\(target.pid)", patch, "--load-timeout", "5", "--allow-constructors")
    #expect(result.status == 1, "\(result.output)")
    #expect(result.output.contains("exited"), "\(result.output)")
    #expect(ws.swpatch("status").output.contains("no patched targets"))
  }

  @Test func driftIsReportedNotRepaired() throws {
    let ws = Workspace()
    let target = try Fixture("loop", ["20"])
    #expect(target.waitForValue("compute", "42"))
    let compute = try address(of: "compute", in: target, workspace: ws)
    let original = target.memory(at: compute, count: 5)
    let patch = ws.patchFile("fix", library: "libfix.so", functions: [("compute", "compute_v2")])
    #expect(ws.swpatch("attach", "\(target.pid)", patch).status == 0)
    ws.stopDaemon()
    // Someone else puts the original bytes back behind the registry's back.
    let mem = open("/proc/\(target.pid)/mem", O_WRONLY)
    #expect(pwrite(mem, original, original.count, off_t(compute)) == 5)
    close(mem)
    #expect(target.waitForValue("compute", "42", from: target.output.count))
    let status = ws.swpatch("status", "--json")
    let hooks = (status.json?["targets"] as? [[String: Any]])?.first?["hooks"] as? [[String: Any]]
    let drift = try #require(hooks?.first?["drift"] as? String, "\(status.output)")
    #expect(drift.contains("not swpatch's jump"))
    #expect(ws.swpatch("status").output.contains("DRIFT"))
    let disable = ws.swpatch("disable", "\(target.pid)", "fix", "--json")
    #expect((disable.json?["error"] as? [String: Any])?["code"] as? String == "drift")
    #expect(target.memory(at: compute, count: 5) == original)
  }

  @Test func aTargetInAnotherMountNamespaceLoadsTheLibrary() throws {
    let ws = Workspace()
    let libraries = ws.directory + "/lib"
    try FileManager.default.createDirectory(atPath: libraries, withIntermediateDirectories: true)
    try FileManager.default.copyItem(atPath: Paths.fixture("libfix.so"), toPath: libraries + "/libfix.so")
    // The target's own view of `lib` is an empty tmpfs: the library's path does not exist there.
    let script = "mount -t tmpfs none '\(libraries)' && exec '\(Paths.fixture("loop"))' 20"
    let target = try Fixture(
      path: "/usr/bin/unshare", ["--mount", "--propagation", "private", "/bin/sh", "-c", script])
    #expect(target.waitForValue("compute", "42"))
    #expect(!FileManager.default.fileExists(atPath: "/proc/\(target.pid)/root\(libraries)/libfix.so"))
    let patch = ws.write(
      "fix.json",
      #"{"id":"fix","library":"\#(libraries)/libfix.so","functions":[{"old":"compute","new":"compute_v2"}]}"#)
    let result = ws.swpatch("attach", "\(target.pid)", patch)
    #expect(result.status == 0, "\(result.output)")
    #expect(target.waitForValue("compute", "63", from: target.output.count))
    // The registry names the content it loaded.
    let status = ws.swpatch("status", "--json").json?["targets"] as? [[String: Any]]
    let sha = (status?.first?["patches"] as? [[String: Any]])?.first?["sha256"] as? String
    let stored = try #require(sha)
    #expect(FileManager.default.fileExists(atPath: ws.stateDir + "/libraries/\(stored).so"))
    let maps = try String(contentsOfFile: "/proc/\(target.pid)/maps", encoding: .utf8)
    #expect(maps.contains("/memfd:swpatch-\(stored.prefix(16))"))
  }

  @Test func statusAnswersWhileAnOperationWaitsForAThreadToLeave() throws {
    let ws = Workspace()
    let target = try ParkedFixture(ws)
    #expect(target.fixture.waitForValue("answer", "1"))
    _ = try target.park()
    #expect(ws.swpatch("status").status == 0)  // the daemon is up
    // The attach waits (stack check) until the parked thread is released.
    let (attach, waiting) = attachWaitingOnParkedThread(ws, target)
    #expect(waiting)
    // status and log are answered while that attach is still in progress.
    let status = ws.swpatch("status", "--json")
    #expect(status.status == 0)
    #expect((status.json?["targets"] as? [Any])?.isEmpty == true)
    #expect(ws.swpatch("log").status == 0)
    #expect(attach.count == 0, "the attach finished before the thread was released")
    target.release()
    #expect(attach.wait(timeout: 60) { _ in true }?.1 == "0")
    #expect(target.fixture.waitForValue("answer", "2", from: target.fixture.output.count))
  }

  @Test func aNewDaemonPutsBackTheWritesOfAnOperationItsPredecessorDidNotFinish() throws {
    let ws = Workspace()
    let target = try Fixture("loop", ["20"])
    #expect(target.waitForValue("compute", "42"))
    let compute = try address(of: "compute", in: target, workspace: ws)
    let patch = ws.patchFile("fix", library: "libfix.so", functions: [("compute", "compute_v2")])
    #expect(ws.swpatch("attach", "\(target.pid)", patch).status == 0)
    let entry = (ws.swpatch("status", "--json").json?["targets"] as? [[String: Any]])?.first
    let startTime = try #require(entry?["start_time"] as? Int)
    let jump = target.memory(at: compute, count: 5)
    ws.stopDaemon()
    // As a daemon killed inside a `disable` leaves it: the entry's original bytes are
    // back in memory, the registry (generation 1) still says enabled, and the journal
    // holds what the entry held before that write.
    let mem = open("/proc/\(target.pid)/mem", O_RDWR)
    let hookBytes = try originalBytes(ws)
    #expect(pwrite(mem, hookBytes, 5, off_t(compute)) == 5)
    close(mem)
    #expect(target.waitForValue("compute", "42", from: target.output.count))
    try FileManager.default.createDirectory(
      atPath: ws.stateDir + "/journal", withIntermediateDirectories: true)
    let journal =
      [
        #"{"pid":\#(target.pid),"startTime":\#(startTime),"generation":1}"#,
        #"{"address":\#(compute),"bytes":[\#(jump.map(String.init).joined(separator: ","))]}"#,
      ].joined(separator: "\n") + "\n"
    _ = ws.write("state/journal/\(target.pid)-\(startTime).log", journal)
    // The next daemon puts the jump back: memory agrees with the registry again.
    let status = ws.swpatch("status", "--json")
    let hooks = (status.json?["targets"] as? [[String: Any]])?.first?["hooks"] as? [[String: Any]]
    #expect(hooks?.count == 1 && hooks?.first?["drift"] == nil, "\(status.output)")
    #expect(target.memory(at: compute, count: 5) == jump)
    #expect(target.waitForValue("compute", "63", from: target.output.count))
    #expect(!FileManager.default.fileExists(atPath: ws.stateDir + "/journal/\(target.pid)-\(startTime).log"))
    #expect(ws.swpatch("log", "--json").output.contains(#""operation":"recover""#))
  }
}

/// The bytes the registry recorded as the first hook's original entry bytes.
private func originalBytes(_ ws: Workspace) throws -> [UInt8] {
  let data = try Data(contentsOf: URL(fileURLWithPath: ws.stateDir + "/registry.json"))
  let text = String(decoding: data, as: UTF8.self)
  let json = try #require((try? JSONSerialization.jsonObject(with: data)) as? [String: Any], "\(text)")
  let targets = try #require(json["targets"] as? [[String: Any]], "\(text)")
  let hooks = try #require(targets.first?["hooks"] as? [[String: Any]], "\(text)")
  let install = try #require(hooks.first?["install"] as? [String: Any], "\(text)")
  let hex = try #require(install["original_bytes"] as? String, "\(install)")
  return stride(from: 0, to: hex.count, by: 2).compactMap { i in
    let start = hex.index(hex.startIndex, offsetBy: i)
    return UInt8(hex[start..<hex.index(start, offsetBy: 2)], radix: 16)
  }
}
