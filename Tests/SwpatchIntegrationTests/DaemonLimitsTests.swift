import Foundation
import Glibc
import Testing

/// A connected socket to `path`, or -1.
func connectRaw(_ path: String) -> Int32 {
  let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
  var address = sockaddr_un()
  address.sun_family = sa_family_t(AF_UNIX)
  withUnsafeMutableBytes(of: &address.sun_path) { raw in
    let bytes = Array(path.utf8)
    raw.copyBytes(from: bytes)
    raw[bytes.count] = 0
  }
  let rc = withUnsafePointer(to: &address) {
    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
      connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
    }
  }
  guard rc == 0 else {
    close(fd)
    return -1
  }
  return fd
}

/// Whatever `fd` has to read within `timeout` seconds, up to the first newline.
func readAvailableLine(_ fd: Int32, timeout: Double) -> String {
  var data = Data()
  var chunk = [UInt8](repeating: 0, count: 4096)
  let deadline = Date().addingTimeInterval(timeout)
  while Date() < deadline, !data.contains(0x0a) {
    var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
    guard poll(&poller, 1, 50) > 0 else { continue }
    let n = recv(fd, &chunk, chunk.count, 0)
    if n <= 0 { break }
    data.append(contentsOf: chunk[0..<n])
  }
  return String(decoding: data, as: UTF8.self)
}

/// utime + stime of `pid`, in seconds.
func cpuSeconds(_ pid: pid_t) -> Double {
  guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
    let close = stat.lastIndex(of: ")")
  else { return -1 }
  let fields = stat[stat.index(close, offsetBy: 2)...].split(separator: " ")
  let ticks = (Double(fields[11]) ?? 0) + (Double(fields[12]) ?? 0)
  return ticks / Double(sysconf(Int32(_SC_CLK_TCK)))
}

/// VmRSS of `pid`, in bytes.
func residentBytes(_ pid: pid_t) -> Int {
  let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
  let line = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") } ?? ""
  return (Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0) * 1024
}

func ping(_ ws: Workspace) -> Bool {
  rawExchange(ws, line(#"{"v":1,"op":"ping"}"#)).contains("\"state_dir\"")
}

/// swpatchd against hostile or careless clients: it stays up, answers others, and
/// refuses with a line that names the cause.
@Suite(.serialized, .needsRoot, .needsFixtures) struct DaemonLimitsTests {
  @Test func thePidFileExistsWhenTheFirstAnswerArrives() throws {
    for _ in 0..<10 {
      let ws = Workspace()
      let daemon = try Fixture(
        path: Paths.swpatch, ["daemon", "--foreground", "--socket", ws.socket, "--state-dir", ws.stateDir])
      defer { daemon.stop() }
      var fd: Int32 = -1
      for _ in 0..<10_000 where fd < 0 {
        fd = connectRaw(ws.socket)
        if fd < 0 { usleep(200) }
      }
      #expect(fd >= 0)
      let request = line(#"{"v":1,"op":"ping"}"#)
      _ = send(fd, request, request.count, Int32(MSG_NOSIGNAL))
      let answer = readAvailableLine(fd, timeout: 5)
      // Read the instant the answer is in: the file must already name the daemon.
      let named = ws.daemonPID
      close(fd)
      #expect(answer.contains("\"state_dir\""), "\(answer)")
      #expect(
        named == daemon.pid, "the pid file names \(String(describing: named)) when the first answer arrives")
    }
  }

  @Test func hostileNumbersInARequestAreRefusedAndTheDaemonServesOn() throws {
    let ws = Workspace()
    let target = try Fixture("loop", ["20"])
    #expect(target.waitForValue("compute", "42"))
    let path = ws.patchFile("fix", library: "libfix.so", functions: [("compute", "compute_v2")])
    let text = try String(contentsOfFile: path, encoding: .utf8)
    func attach(pid: String, options: String) -> [UInt8] {
      let patch = String(decoding: try! JSONSerialization.data(withJSONObject: [text]), as: UTF8.self)
        .dropFirst().dropLast()
      return line(
        #"{"v":1,"op":"attach","pid":\#(pid),"patch":\#(patch),"patch_path":"\#(path)","options":\#(options)}"#
      )
    }
    #expect(ws.swpatch("status").status == 0)
    // Each of these reached a trapping Double-to-Int64 conversion, or a pid that is not
    // a process.
    let options = [
      #"{"load_timeout":1e300}"#, #"{"load_timeout":-1}"#, #"{"load_timeout":0}"#,
      #"{"load_timeout":600.5}"#, #"{"load_timeout":1e999}"#, #"{"retry_for":1e300}"#,
      #"{"retry_for":-5}"#, #"{"retry_for":601}"#,
    ]
    for option in options {
      let answer = rawExchange(ws, attach(pid: "\(target.pid)", options: option))
      #expect(errorCode(of: answer) == "bad_request", "\(option): \(answer)")
      #expect(ping(ws), "the daemon stopped answering after \(option)")
    }
    for pid in ["1e20", "-5", "0", "2147483648", "1.5"] {
      let answers = [
        rawExchange(ws, attach(pid: pid, options: "{}")),
        rawExchange(ws, line(#"{"v":1,"op":"disable","pid":\#(pid),"patch_id":"fix"}"#)),
        rawExchange(ws, line(#"{"v":1,"op":"status","pid":\#(pid)}"#)),
      ]
      for answer in answers { #expect(errorCode(of: answer) == "bad_request", "pid \(pid): \(answer)") }
      #expect(ping(ws), "the daemon stopped answering after pid \(pid)")
    }
    // The bounds themselves are accepted (a dry run changes nothing).
    let edge = rawExchange(
      ws, attach(pid: "\(target.pid)", options: #"{"load_timeout":600,"retry_for":0,"dry_run":true}"#))
    #expect(errorCode(of: edge) == nil, "\(edge)")
    #expect(errorCode(of: rawExchange(ws, line(#"{"v":1,"op":"status","op":"ping"}"#))) == "bad_request")
    #expect(rawExchange(ws, line(#"{"v":1,"op":"status","op":"ping"}"#)).contains("'op' twice"))
    #expect(target.waitForValue("compute", "42", from: target.output.count))
    #expect(ws.swpatch("status").output.contains("no patched targets"))
  }

  @Test func connectionsOverTheLimitAreRefusedAndTheDaemonStaysIdleAndResponsive() throws {
    let ws = Workspace()
    // With 64 descriptors the daemon serves at most 32 connections.
    let first = ws.run(["status"], prefix: ["/usr/bin/prlimit", "--nofile=64:64"])
    #expect(first.status == 0, "\(first.output)")
    let daemon = try #require(ws.daemonPID)
    usleep(200_000)  // the CLI's own connection is closed and counted out
    let fds = (0..<80).map { _ in connectRaw(ws.socket) }
    defer { for fd in fds where fd >= 0 { close(fd) } }
    #expect(fds.allSatisfy { $0 >= 0 })
    var held: [Int32] = []
    var refused = 0
    for fd in fds {
      let answer = readAvailableLine(fd, timeout: held.count < 32 ? 0.05 : 2)
      if answer.isEmpty {
        held.append(fd)
      } else {
        #expect(errorCode(of: answer) == "too_many_connections", "\(answer)")
        refused += 1
      }
    }
    #expect(held.count == 32)
    #expect(refused == 48)
    // Holding every connection it may serve costs the daemon no CPU.
    let before = cpuSeconds(daemon)
    sleep(2)
    let spent = cpuSeconds(daemon) - before
    #expect(before >= 0 && spent < 0.5, "the daemon used \(spent) s of CPU in 2 s idle")
    let full = ws.swpatch("status", "--json")
    #expect(
      (full.json?["error"] as? [String: Any])?["code"] as? String == "too_many_connections", "\(full.output)")
    // Once some close, a new client is served at once.
    for fd in held.prefix(4) { shutdown(fd, Int32(SHUT_RDWR)) }
    usleep(200_000)
    let start = Date()
    let status = ws.swpatch("status")
    #expect(status.status == 0, "\(status.output)")
    #expect(Date().timeIntervalSince(start) < 3)
  }

  @Test func aClientThatSendsWithoutReadingDoesNotGrowTheDaemon() throws {
    let ws = Workspace()
    #expect(ws.swpatch("status").status == 0)
    let daemon = try #require(ws.daemonPID)
    // 100 refused requests make each `log` answer about 30 KB: 5,000 of them, computed
    // ahead of a client that does not read, would be 150 MB.
    let refusals = rawExchange(
      ws,
      Array(repeating: line(#"{"v":1,"op":"enable","pid":\#(getpid()),"patch_id":"x"}"#), count: 100).flatMap
      { $0 })
    #expect(refusals.split(separator: "\n").count == 100)
    let fd = connectRaw(ws.socket)
    #expect(fd >= 0)
    defer { close(fd) }
    let count = 5000
    let requests = Array(repeating: line(#"{"v":1,"op":"log"}"#), count: count).flatMap { $0 }
    let baseline = residentBytes(daemon)
    let sent = LineBuffer()
    // Should the daemon stop reading, this send blocks until the answers are read below.
    Thread {
      var offset = 0
      while offset < requests.count {
        let n = requests.withUnsafeBytes {
          send(fd, $0.baseAddress! + offset, $0.count - offset, Int32(MSG_NOSIGNAL))
        }
        if n <= 0 { break }
        offset += n
      }
      sent.append("\(offset)")
    }.start()
    var peak = 0
    for _ in 0..<50 {
      peak = max(peak, residentBytes(daemon))
      usleep(100_000)
    }
    #expect(baseline > 0)
    #expect(peak - baseline < 25 << 20, "the daemon grew from \(baseline >> 20) to \(peak >> 20) MiB")
    // The requests are answered, in order, as the client reads.
    var answers = 0
    var pending = Data()
    var chunk = [UInt8](repeating: 0, count: 65536)
    var tv = timeval(tv_sec: 10, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    while answers < 200 {
      let n = recv(fd, &chunk, chunk.count, 0)
      if n <= 0 { break }
      pending.append(contentsOf: chunk[0..<n])
      while let newline = pending.firstIndex(of: 0x0a) {
        let answer = pending[pending.startIndex..<newline]
        #expect(
          answer.starts(with: Data(#"{"ok":true,"result":[{"#.utf8)),
          "\(String(decoding: answer.prefix(100), as: UTF8.self))")
        pending.removeSubrange(pending.startIndex...newline)
        answers += 1
      }
    }
    #expect(answers >= 200)
    shutdown(fd, Int32(SHUT_RDWR))
    #expect(sent.wait(timeout: 10) { _ in true } != nil)
    #expect(ping(ws))
  }

  @Test func anAttachWhoseClientLeftBeforeItStartedIsNotRun() throws {
    let ws = Workspace()
    let parked = try ParkedFixture(ws)
    #expect(parked.fixture.waitForValue("answer", "1"))
    let other = try Fixture("loop", ["20"])
    #expect(other.waitForValue("compute", "42"))
    _ = try parked.park()
    #expect(ws.swpatch("status").status == 0)
    // The worker is busy: this attach waits for the parked thread to leave answer().
    let (first, waiting) = attachWaitingOnParkedThread(ws, parked)
    #expect(waiting)
    // A second attach, queued behind it, from a client that closes at once.
    let path = ws.patchFile("fix", library: "libfix.so", functions: [("compute", "compute_v2")])
    let request: [String: Any] = [
      "v": 1, "op": "attach", "pid": Int(other.pid), "patch_path": path,
      "patch": try String(contentsOfFile: path, encoding: .utf8),
    ]
    let bytes = try JSONSerialization.data(withJSONObject: request) + Data([0x0a])
    _ = rawExchange(ws, Array(bytes), closeAfterSend: true)
    usleep(300_000)
    parked.release()
    #expect(first.wait(timeout: 60) { _ in true }?.1 == "0")
    // The queued attach never ran: the other target is unpatched, and the log says why.
    #expect(other.waitForValue("compute", "42", from: other.output.count))
    let status = ws.swpatch("status", "--json").json?["targets"] as? [[String: Any]]
    let pids = try #require(status).compactMap { $0["pid"] as? Int }
    #expect(pids == [Int(parked.pid)])
    let log = ws.swpatch("log", "--pid", "\(other.pid)", "--json")
    let records = try #require(
      (try? JSONSerialization.jsonObject(with: Data(log.output.utf8))) as? [[String: Any]], "\(log.output)")
    #expect(records.count == 1, "\(log.output)")
    #expect(records.first?["result"] as? String == "cancelled", "\(log.output)")
    #expect(records.first?["patch"] as? String == "fix", "\(log.output)")
  }
}
