import Foundation
import Glibc
import SwpatchProcess
import Testing

/// Debian's nginx (a master and three workers) patched as a service: `attach --all-of`,
/// a reload under the rule, and `disable --all-of`, with requests running throughout
/// (docs/services.md, "nginx"). The replacement (Fixtures/libngxfix.c) wraps
/// `ngx_http_send_response`, which serves `return 200 "..."`, and answers "patched".
@Suite(.serialized, .needsRoot, .needsFixtures, .needsNginx) struct NginxTests {
  @Test func allOfPatchesEveryWorkerKeepsThemPatchedAcrossAReloadAndDisableRevertsWithNoFailedRequest()
    throws
  {
    let ws = Workspace()
    let server = try NginxServer(in: ws)
    defer { server.stop() }
    let workers = try #require(server.waitForWorkers(count: 3), "\(server.errorLog)")
    #expect(server.answers(50) == ["original\n": 50])

    let traffic = RequestLoop(port: server.port)
    traffic.start()
    defer { traffic.stop() }

    let patch = ws.write(
      "ngx-fix.json",
      #"{"id": "ngx-fix", "library": "\#(Paths.fixture("libngxfix.so"))", "functions": [{"old": "ngx_http_send_response", "new": "ngx_http_send_response_fix", "prev": "ngx_http_send_response_prev"}]}"#
    )
    let attached = ws.run(["attach", "--all-of", server.binary, patch, "--json"])
    #expect(attached.status == 0, "\(attached.output.prefix(2000))\n\(ws.daemonLog.suffix(3000))")
    let json = try #require(attached.json, "\(attached.output)")
    // The master and its three workers.
    #expect(json["patched"] as? Int == 4, "\(attached.output)")
    #expect((json["failed"] as? [Any])?.count == 0)
    #expect(json["rule"] as? String == "recorded")
    let outcomes = try #require(json["processes"] as? [[String: Any]])
    for pid in workers + [server.masterPID] {
      let outcome = outcomes.first { $0["pid"] as? Int == Int(pid) }
      #expect(outcome?["result"] as? String == "patched", "pid \(pid): \(attached.output)")
    }
    #expect(server.answers(50) == ["patched\n": 50])

    // A reload starts new workers; the old ones finish and exit.
    let reload = try server.signal("reload")
    #expect(reload.status == 0, "\(reload.output)")
    let renewed = try #require(
      server.waitForWorkers(count: 3, excluding: Set(workers)), "\(server.errorLog)")
    #expect(Set(renewed).isDisjoint(with: workers))
    #expect(server.waitUntilGone(workers), "old workers still running: \(workers)")
    #expect(server.answers(50) == ["patched\n": 50])
    // The daemon adopts workers forked from the patched master (within 1 s of the fork).
    var status = CLIResult(status: 0, output: "")
    for _ in 0..<100 {
      status = ws.run(["status", "--all-of", server.binary])
      if status.output.components(separatedBy: "inherited from pid \(server.masterPID)").count == 4 { break }
      usleep(100_000)
    }
    #expect(status.status == 0)
    for pid in renewed {
      #expect(status.output.contains("pid \(pid) "), "worker \(pid) not listed: \(status.output)")
    }
    #expect(
      status.output.components(separatedBy: "inherited from pid \(server.masterPID)").count == 4,
      "\(status.output)")

    let disabled = ws.run(["disable", "--all-of", server.binary, "ngx-fix"])
    #expect(disabled.status == 0, "\(disabled.output)\n\(ws.daemonLog.suffix(3000))")
    #expect(disabled.output.hasPrefix("disabled 'ngx-fix' on 4 of 4 processes"), "\(disabled.output)")
    #expect(server.answers(50) == ["original\n": 50])

    let (sent, failed, seen) = traffic.stop()
    print("nginx: \(sent) requests in the background, \(failed) failed, answers \(seen)")
    #expect(sent > 50)
    #expect(failed == 0, "\(traffic.failures.prefix(5))")
    #expect(seen.keys.allSatisfy { $0 == "original\n" || $0 == "patched\n" }, "\(seen)")
    #expect(seen["patched\n", default: 0] > 0)
    #expect(server.workerPIDs().count == 3)
  }
}

extension Trait where Self == ConditionTrait {
  /// Debian's nginx package, which `make deps` installs.
  static var needsNginx: Self {
    .enabled(
      if: FileManager.default.isExecutableFile(atPath: NginxServer.debianBinary),
      "needs Debian's nginx at /usr/sbin/nginx: run `make deps` (make test does)")
  }
}

/// An nginx master with three workers (as www-data, like Debian's own configuration) in
/// a workspace of its own: its own copy of
/// /usr/sbin/nginx (so that `--all-of` sees only these processes), prefix, config, pid
/// file, error log and temp paths, on a free loopback port. Stopped by pid.
final class NginxServer: @unchecked Sendable {
  static let debianBinary = "/usr/sbin/nginx"
  let prefix: String
  let binary: String
  let config: String
  let port: UInt16
  private let master: Fixture
  var masterPID: pid_t { master.pid }

  init(in ws: Workspace) throws {
    let prefix = ws.directory + "/nginx"
    self.prefix = prefix
    try FileManager.default.createDirectory(atPath: prefix + "/logs", withIntermediateDirectories: true)
    binary = ws.directory + "/nginx-bin"
    try FileManager.default.copyItem(atPath: Self.debianBinary, toPath: binary)
    port = try freePort()
    config = prefix + "/nginx.conf"
    let temp = ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"].map {
      "    \($0)_temp_path \(prefix)/\($0);"
    }
    let text = """
      daemon off;
      user www-data;
      master_process on;
      worker_processes 3;
      pid \(prefix)/nginx.pid;
      error_log \(prefix)/logs/error.log info;
      events { worker_connections 256; }
      http {
        access_log off;
      \(temp.joined(separator: "\n"))
        server {
          listen 127.0.0.1:\(port);
          location / { return 200 "original\\n"; }
        }
      }

      """
    _ = FileManager.default.createFile(atPath: config, contents: Data(text.utf8))
    master = try Fixture(path: binary, ["-p", prefix, "-c", config, "-e", prefix + "/logs/error.log"])
  }

  var errorLog: String {
    (try? String(contentsOfFile: prefix + "/logs/error.log", encoding: .utf8)).map {
      String($0.suffix(3000))
    } ?? "(no error log)"
  }

  /// The master's children that run (not those shutting down, which nginx renames).
  func workerPIDs() -> [pid_t] {
    let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
    return entries.compactMap { pid_t($0) }.filter { pid in
      guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
        let close = stat.lastIndex(of: ")")
      else { return false }
      let fields = stat[stat.index(after: close)...].split(separator: " ")
      return fields.count > 2 && pid_t(fields[1]) == master.pid && fields[0] != "Z"
    }
  }

  /// Waits until `count` workers not in `excluding` run and the port answers.
  func waitForWorkers(count: Int, excluding: Set<pid_t> = [], timeout: Double = 15) -> [pid_t]? {
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline {
      let fresh = workerPIDs().filter { !excluding.contains($0) }
      if fresh.count >= count, (try? request(port: port)) != nil { return fresh }
      usleep(50_000)
    }
    return nil
  }

  func waitUntilGone(_ pids: [pid_t], timeout: Double = 15) -> Bool {
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline {
      if !pids.contains(where: processExists) { return true }
      usleep(50_000)
    }
    return false
  }

  /// `n` requests in a row, counted by answer (a failure counts under its error).
  func answers(_ n: Int) -> [String: Int] {
    var seen: [String: Int] = [:]
    for _ in 0..<n {
      let answer = (try? request(port: port)) ?? "(failed)"
      seen[answer, default: 0] += 1
    }
    return seen
  }

  /// `nginx -s NAME` with this server's prefix and config, as an operator runs it.
  func signal(_ name: String) throws -> CLIResult {
    let (pid, fd) = try spawn(binary, ["-p", prefix, "-c", config, "-s", name])
    var data = Data()
    drain(fd) { data.append(contentsOf: $0) }
    var status: Int32 = 0
    waitpid(pid, &status, 0)
    return CLIResult(status: (status >> 8) & 0xff, output: String(decoding: data, as: UTF8.self))
  }

  /// SIGTERM to the master (nginx's fast shutdown ends the workers first), a bounded
  /// wait, then SIGKILL to any worker left.
  func stop() {
    let workers = workerPIDs()
    master.stop()
    if !waitUntilGone(workers, timeout: 5) {
      for pid in workers where processExists(pid) { kill(pid, SIGKILL) }
    }
  }
}

/// A loopback port nothing listens on now.
func freePort() throws -> UInt16 {
  let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
  guard fd >= 0 else { throw POSIXError(.EIO) }
  defer { close(fd) }
  var address = sockaddr_in()
  address.sin_family = sa_family_t(AF_INET)
  address.sin_addr.s_addr = inet_addr("127.0.0.1")
  address.sin_port = 0
  var length = socklen_t(MemoryLayout<sockaddr_in>.size)
  let bound = withUnsafeMutablePointer(to: &address) {
    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
      bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0
    }
  }
  guard bound else { throw POSIXError(.EADDRINUSE) }
  return UInt16(bigEndian: address.sin_port)
}

struct RequestFailure: Error, CustomStringConvertible {
  var description: String
}

/// One HTTP/1.0 GET of / on a fresh connection; the body of a 200 answer.
func request(port: UInt16) throws -> String {
  let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
  guard fd >= 0 else { throw RequestFailure(description: "socket: errno \(errno)") }
  defer { close(fd) }
  var timeout = timeval(tv_sec: 5, tv_usec: 0)
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
  var address = sockaddr_in()
  address.sin_family = sa_family_t(AF_INET)
  address.sin_addr.s_addr = inet_addr("127.0.0.1")
  address.sin_port = port.bigEndian
  let connected = withUnsafePointer(to: &address) {
    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
      connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
    }
  }
  guard connected else { throw RequestFailure(description: "connect: errno \(errno)") }
  let text = Array("GET / HTTP/1.0\r\nHost: localhost\r\n\r\n".utf8)
  guard write(fd, text, text.count) == text.count else {
    throw RequestFailure(description: "write: errno \(errno)")
  }
  var data: [UInt8] = []
  var chunk = [UInt8](repeating: 0, count: 4096)
  while true {
    let n = read(fd, &chunk, chunk.count)
    if n < 0 { throw RequestFailure(description: "read: errno \(errno)") }
    if n == 0 { break }
    data += chunk[0..<n]
  }
  let answer = String(decoding: data, as: UTF8.self)
  guard answer.hasPrefix("HTTP/1.1 200 "), let split = answer.range(of: "\r\n\r\n") else {
    throw RequestFailure(description: "answer: \(answer.prefix(200))")
  }
  return String(answer[split.upperBound...])
}

/// Requests one after another on a thread of its own (5 ms apart) until stopped,
/// counting answers and failures.
final class RequestLoop: @unchecked Sendable {
  let port: UInt16
  private let lock = NSLock()
  private var running = false
  private var done = DispatchSemaphore(value: 0)
  private var sent = 0
  private var seen: [String: Int] = [:]
  private(set) var failures: [String] = []

  init(port: UInt16) { self.port = port }

  func start() {
    lock.withLock { running = true }
    let thread = Thread { [self] in
      while lock.withLock({ running }) {
        let result = Result { try request(port: port) }
        lock.withLock {
          sent += 1
          switch result {
          case .success(let body): seen[body, default: 0] += 1
          case .failure(let error): failures.append("\(error)")
          }
        }
        usleep(5_000)
      }
      done.signal()
    }
    thread.start()
  }

  /// Stops the loop (once; later calls only read the counts) and returns what it saw.
  @discardableResult func stop() -> (sent: Int, failed: Int, seen: [String: Int]) {
    let wasRunning = lock.withLock {
      defer { running = false }
      return running
    }
    if wasRunning { done.wait() }
    return lock.withLock { (sent, failures.count, seen) }
  }
}
