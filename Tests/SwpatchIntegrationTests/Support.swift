import Foundation
import Glibc
import SwpatchProcess
import Testing

/// Paths of the built fixtures and the swpatch binary under test.
enum Paths {
  static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    .deletingLastPathComponent().deletingLastPathComponent().path
  static let fixtures = root + "/Fixtures/build"
  /// The swpatch executable built next to the test bundle.
  static var swpatch: String {
    let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? ""
    var dir = URL(fileURLWithPath: exe).deletingLastPathComponent()
    if dir.lastPathComponent.hasSuffix(".xctest") { dir = dir.deletingLastPathComponent() }
    return dir.appendingPathComponent("swpatch").path
  }
  static func fixture(_ name: String) -> String { fixtures + "/" + name }
}

/// What the integration suites need, as Swift Testing traits: without it a suite is
/// skipped with the reason, never failed or passed vacuously.
extension Trait where Self == ConditionTrait {
  /// ptrace of processes the test did not start, and /proc/PID/mem of any process.
  static var needsRoot: Self {
    .enabled(if: geteuid() == 0, "needs root (ptrace and /proc/PID/mem): run `make test` as root")
  }
  /// The C programs and libraries of Fixtures/, built by `make fixtures`.
  static var needsFixtures: Self {
    .enabled(
      if: FileManager.default.isExecutableFile(atPath: Paths.fixture("loop")),
      "needs the fixtures in Fixtures/build: run `make fixtures` (make test does)")
  }
}

/// A line buffer filled from a pipe by a background thread.
final class LineBuffer: @unchecked Sendable {
  private let lock = NSCondition()
  private var lines: [String] = []
  private var closed = false

  func append(_ line: String) {
    lock.lock()
    lines.append(line)
    lock.broadcast()
    lock.unlock()
  }

  func close() {
    lock.lock()
    closed = true
    lock.broadcast()
    lock.unlock()
  }

  var all: [String] {
    lock.lock()
    defer { lock.unlock() }
    return lines
  }

  var count: Int { all.count }

  /// Waits for a line after index `from` satisfying `match`; nil on timeout or EOF.
  func wait(from: Int = 0, timeout: Double = 10, _ match: (String) -> Bool) -> (Int, String)? {
    let deadline = Date().addingTimeInterval(timeout)
    lock.lock()
    defer { lock.unlock() }
    var i = from
    while true {
      while i < lines.count {
        if match(lines[i]) { return (i, lines[i]) }
        i += 1
      }
      if closed || Date() > deadline { return nil }
      _ = lock.wait(until: min(deadline, Date().addingTimeInterval(0.05)))
    }
  }
}

/// Spawns a program with an empty signal mask and default dispositions (children of
/// `swift test` otherwise inherit a blocked mask and ignore SIGTERM), capturing stdout
/// and stderr in one pipe.
func spawn(_ path: String, _ args: [String], env: [String: String] = [:]) throws -> (pid_t, Int32) {
  var fds: [Int32] = [0, 0]
  guard pipe(&fds) == 0 else { throw POSIXError(.EIO) }
  defer { Glibc.close(fds[1]) }
  do {
    let pid = try ChildProcess.spawn(path, args, environment: env, stdout: .descriptor(fds[1]))
    return (pid, fds[0])
  } catch {
    Glibc.close(fds[0])
    throw error
  }
}

/// Hands `body` each chunk read from `fd` until EOF, then closes `fd`.
func drain(_ fd: Int32, _ body: (ArraySlice<UInt8>) -> Void) {
  var chunk = [UInt8](repeating: 0, count: 4096)
  while true {
    let n = read(fd, &chunk, chunk.count)
    if n <= 0 { break }
    body(chunk[0..<n])
  }
  Glibc.close(fd)
}

/// Reads `fd` line by line into `buffer` on a thread of its own until EOF.
func pump(_ fd: Int32, into buffer: LineBuffer) {
  let thread = Thread {
    var pending = Data()
    drain(fd) { chunk in
      pending.append(contentsOf: chunk)
      while let newline = pending.firstIndex(of: 0x0a) {
        buffer.append(String(decoding: pending[pending.startIndex..<newline], as: UTF8.self))
        pending.removeSubrange(pending.startIndex...newline)
      }
    }
    buffer.close()
  }
  thread.start()
}

/// A running fixture process, owned by the test that started it and stopped by pid.
final class Fixture: @unchecked Sendable {
  let pid: pid_t
  let output = LineBuffer()
  private var reaped = false

  convenience init(_ name: String, _ args: [String] = []) throws {
    try self.init(path: Paths.fixture(name), args)
  }

  /// Starts the program at `path` (a copy of a fixture, say).
  init(path: String, _ args: [String] = []) throws {
    let (pid, fd) = try spawn(path, args)
    self.pid = pid
    pump(fd, into: output)
  }

  /// How the process ended, once reaped by `isAlive` (for failure messages: a signal
  /// of its own, such as SIGSEGV, is a bug; SIGTERM or SIGKILL came from someone else).
  private(set) var ending: String?

  var isAlive: Bool {
    if reaped { return false }
    var status: Int32 = 0
    let r = waitpid(pid, &status, WNOHANG)
    if r == pid {
      reaped = true
      let signal = status & 0x7f
      ending = signal == 0 ? "exited with status \((status >> 8) & 0xff)" : "killed by signal \(signal)"
      return false
    }
    return kill(pid, 0) == 0
  }

  /// The last value of `key=` on a line after `from` that has it.
  func waitForValue(_ key: String, _ value: String, from: Int = 0, timeout: Double = 10) -> Bool {
    output.wait(from: from, timeout: timeout) {
      $0.contains(" \(key)=\(value) ") || $0.hasSuffix(" \(key)=\(value)")
    }
      != nil
  }

  /// Waits until the fixture has printed `count` more lines, proving it still runs.
  func keepsRunning(lines count: Int = 3, timeout: Double = 10) -> Bool {
    let start = output.count
    return output.wait(from: start + count - 1, timeout: timeout) { _ in true } != nil && isAlive
  }

  /// SIGTERM, a bounded wait, then SIGKILL.
  func stop() {
    guard !reaped else { return }
    kill(pid, SIGTERM)
    var status: Int32 = 0
    for _ in 0..<200 {
      if waitpid(pid, &status, WNOHANG) == pid {
        reaped = true
        return
      }
      usleep(10_000)
    }
    kill(pid, SIGKILL)
    waitpid(pid, &status, 0)
    reaped = true
  }

  deinit { stop() }

  /// Reads the target's memory (root may read /proc/PID/mem without attaching).
  func memory(at address: UInt64, count: Int) -> [UInt8] {
    guard let handle = FileHandle(forReadingAtPath: "/proc/\(pid)/mem") else { return [] }
    defer { try? handle.close() }
    guard (try? handle.seek(toOffset: address)) != nil else { return [] }
    return Array((try? handle.read(upToCount: count)) ?? Data())
  }
}

/// The result of running the swpatch CLI.
struct CLIResult {
  var status: Int32
  var output: String
  var json: [String: Any]? {
    (try? JSONSerialization.jsonObject(with: Data(output.utf8))) as? [String: Any]
  }
}

/// A temporary state directory, daemon socket and patch-file folder per test. The first
/// CLI call starts the workspace's own daemon; the workspace stops it.
final class Workspace: @unchecked Sendable {
  let directory: String
  var stateDir: String { directory + "/state" }
  var socket: String { directory + "/swpatchd.sock" }
  /// Extra environment for every CLI run (e.g. SWPATCH_SOCKET_GROUP).
  var environment: [String: String] = [:]

  init() {
    directory = NSTemporaryDirectory() + "swpatch-test-" + UUID().uuidString
    try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    chmod(directory, 0o755)
  }

  deinit {
    stopDaemon()
    try? FileManager.default.removeItem(atPath: directory)
  }

  /// The daemon's log so far (for failure messages).
  var daemonLog: String {
    (try? String(contentsOfFile: stateDir + "/swpatchd.log", encoding: .utf8)) ?? "(no daemon log)"
  }

  /// The pid of the workspace's daemon, from its pid file.
  var daemonPID: pid_t? {
    (try? String(contentsOfFile: stateDir + "/swpatchd.pid", encoding: .utf8))
      .flatMap { pid_t($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
  }

  /// SIGTERM to the daemon, a bounded wait for it to go, then SIGKILL.
  func stopDaemon() {
    guard let pid = daemonPID, processExists(pid) else { return }
    kill(pid, SIGTERM)
    for _ in 0..<300 where processExists(pid) { usleep(10_000) }
    if processExists(pid) { kill(pid, SIGKILL) }
  }

  /// Runs `swpatch args...` against this workspace's daemon and state directory.
  func swpatch(_ args: String...) -> CLIResult { run(args) }

  func run(_ args: [String], prefix: [String] = []) -> CLIResult {
    let env = ["SWPATCH_STATE_DIR": stateDir, "SWPATCH_SOCKET": socket].merging(environment) { $1 }
    let command = prefix.isEmpty ? Paths.swpatch : prefix[0]
    let arguments = prefix.isEmpty ? args : Array(prefix.dropFirst()) + [Paths.swpatch] + args
    guard let (pid, fd) = try? spawn(command, arguments, env: env)
    else { return CLIResult(status: -1, output: "spawn failed") }
    var data = Data()
    drain(fd) { data.append(contentsOf: $0) }
    var status: Int32 = 0
    waitpid(pid, &status, 0)
    let code = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
    return CLIResult(status: code, output: String(decoding: data, as: UTF8.self))
  }

  /// Writes a patch file; `library` is a fixture library name.
  func patchFile(
    _ id: String, library: String, functions: [(String, String)], extra: String = ""
  ) -> String {
    let list = functions.map { #"{"old": "\#($0.0)", "new": "\#($0.1)"}"# }.joined(separator: ", ")
    let text = #"{"id": "\#(id)", "library": "\#(Paths.fixture(library))", "functions": [\#(list)]\#(extra)}"#
    return write(id + ".json", text)
  }

  func write(_ name: String, _ text: String) -> String {
    let path = directory + "/" + name
    _ = FileManager.default.createFile(atPath: path, contents: Data(text.utf8))
    return path
  }
}

/// Field 22 of /proc/PID/stat: with the pid, what tells a process from a restarted one.
func processStartTime(_ pid: pid_t) -> UInt64? {
  guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
    let close = stat.lastIndex(of: ")")
  else { return nil }
  let fields = stat[stat.index(after: close)...].split(separator: " ")
  return fields.count > 19 ? UInt64(fields[19]) : nil
}

/// True while `pid` exists and is not a zombie (a daemon started by a CLI is not our
/// child, so it cannot be reaped here).
func processExists(_ pid: pid_t) -> Bool {
  guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
    let close = stat.lastIndex(of: ")")
  else { return false }
  let state = stat[stat.index(close, offsetBy: 2)]
  return state != "Z" && state != "X"
}

/// Address of a function in a running fixture, via `swpatch symbols --json`.
func address(of name: String, in fixture: Fixture, workspace: Workspace) throws -> UInt64 {
  let result = workspace.swpatch("symbols", "\(fixture.pid)", name, "--json")
  let lines = try #require(
    (try? JSONSerialization.jsonObject(with: Data(result.output.utf8))) as? [[String: Any]])
  let text = try #require(lines.first?["address"] as? String)
  return try #require(UInt64(text.dropFirst(2), radix: 16))
}

/// Runs `attach` expecting a refusal: exit 1 with a one-line `error:` message naming
/// every word of `mentions`, the `--json` error `code` when one is given, and the target
/// untouched: the 32 bytes at `address` and its mappings unchanged, and still running.
func expectRefusedAttach(
  _ target: Fixture, _ ws: Workspace, _ path: String, code: String? = nil, mentions: [String],
  watch address: UInt64, options: [String] = [], sourceLocation: SourceLocation = #_sourceLocation
) throws {
  let before = target.memory(at: address, count: 32)
  let mapsBefore = try String(contentsOfFile: "/proc/\(target.pid)/maps", encoding: .utf8)
  let text = ws.run(["attach", "\(target.pid)", path] + options)
  #expect(text.status == 1, "\(text.output)", sourceLocation: sourceLocation)
  let message = text.output.trimmingCharacters(in: .whitespacesAndNewlines)
  #expect(message.hasPrefix("error: "), sourceLocation: sourceLocation)
  #expect(!message.contains("\n"), "not one line: \(message)", sourceLocation: sourceLocation)
  for word in mentions {
    #expect(message.contains(word), "\(message) lacks \(word)", sourceLocation: sourceLocation)
  }
  if let code {
    let json = ws.run(["attach", "\(target.pid)", path, "--json"] + options)
    #expect(json.status == 1, sourceLocation: sourceLocation)
    let error = json.json?["error"] as? [String: Any]
    #expect(error?["code"] as? String == code, "\(json.output)", sourceLocation: sourceLocation)
  }
  #expect(target.memory(at: address, count: 32) == before, sourceLocation: sourceLocation)
  let mapsAfter = try String(contentsOfFile: "/proc/\(target.pid)/maps", encoding: .utf8)
  #expect(mapsAfter == mapsBefore, "the target's mappings changed", sourceLocation: sourceLocation)
  #expect(target.keepsRunning(), sourceLocation: sourceLocation)
}
