import Foundation
import Glibc
import SwpatchProcess

/// How a finished child went: exit, wall time from spawn to exit, peak RSS.
struct ChildResult {
  /// Exit code, or 128 + signal number.
  var status: Int32
  var timedOut: Bool
  var wall: Duration
  var stdout: String
  var stderr: String

  var succeeded: Bool { status == 0 && !timedOut }
  /// One line for the table when the child failed.
  var failure: String {
    if timedOut { return "timed out" }
    let text = (stderr.isEmpty ? stdout : stderr).split(separator: "\n").last.map(String.init) ?? ""
    return "exit \(status): \(text.prefix(120))"
  }
}

/// Starts child processes with an empty signal mask and default dispositions (so they
/// stop on SIGTERM whoever started the bench), and stops each one by its pid.
enum Child {
  struct Pipes {
    var stdin: Int32 = -1
    var stdout: Int32 = -1
  }

  /// Spawns `path`; stdout and stderr go to the given files (else /dev/null), or stdin
  /// and stdout to pipes returned in `Pipes` when `pipes` is true.
  static func spawn(
    _ path: String, _ args: [String], env: [String: String], stdoutFile: String? = nil,
    stderrFile: String? = nil, pipes: Bool = false
  ) throws -> (pid_t, Pipes) {
    func file(_ path: String?) -> ChildProcess.Stream { path.map { .file($0, append: false) } ?? .null }
    guard pipes else {
      let pid = try ChildProcess.spawn(
        path, args, environment: env, stdout: file(stdoutFile), stderr: file(stderrFile))
      return (pid, Pipes())
    }
    var input: [Int32] = [0, 0]
    var output: [Int32] = [0, 0]
    guard pipe(&input) == 0, pipe(&output) == 0 else {
      throw BenchError("pipe: \(String(cString: strerror(errno)))")
    }
    // The child's ends are closed here once it has them.
    defer { [input[0], output[1]].forEach { Glibc.close($0) } }
    do {
      let pid = try ChildProcess.spawn(
        path, args, environment: env, stdin: .descriptor(input[0]), stdout: .descriptor(output[1]),
        stderr: file(stderrFile))
      return (pid, Pipes(stdin: input[1], stdout: output[0]))
    } catch {
      Glibc.close(input[1])
      Glibc.close(output[0])
      throw BenchError("cannot start \(path): \(error)")
    }
  }

  /// Runs `path` to completion, killed after `timeout` seconds; stdout and stderr are
  /// kept in files under `scratch`.
  static func run(
    _ path: String, _ args: [String], env: [String: String] = [:], scratch: String,
    timeout: Double
  ) -> ChildResult {
    let out = scratch + "/child.out"
    let err = scratch + "/child.err"
    let start = ContinuousClock.now
    let pid: pid_t
    do {
      (pid, _) = try spawn(path, args, env: env, stdoutFile: out, stderrFile: err)
    } catch {
      return ChildResult(status: 127, timedOut: false, wall: .zero, stdout: "", stderr: "\(error)")
    }
    let (status, timedOut, _, end) = waitBounded(pid, timeout: timeout)
    return ChildResult(
      status: status, timedOut: timedOut, wall: end - start,
      stdout: (try? String(contentsOfFile: out, encoding: .utf8)) ?? "",
      stderr: (try? String(contentsOfFile: err, encoding: .utf8)) ?? "")
  }

  /// Waits for `pid` to exit, SIGKILLing it after `timeout` seconds. The child is
  /// reaped only after the watchdog can no longer fire, so the watchdog never signals a
  /// recycled pid. Returns the status, whether it timed out, its usage and when it exited.
  static func waitBounded(_ pid: pid_t, timeout: Double)
    -> (Int32, Bool, rusage, ContinuousClock.Instant)
  {
    let watchdog = Watchdog()
    DispatchQueue.global().asyncAfter(deadline: .now() + timeout) { watchdog.fire(pid) }
    ChildProcess.waitUntilExited(pid)
    let end = ContinuousClock.now
    let timedOut = watchdog.disarm()
    let (status, usage) = ChildProcess.reap(pid)
    return (status, timedOut, usage, end)
  }

  /// SIGTERM, then SIGKILL after `grace` seconds; always reaps. For long-lived children.
  static func stop(_ pid: pid_t, grace: Double = 3) { ChildProcess.stop(pid, grace: grace) }

  /// nil while `pid` (a child of ours) runs; once it has exited, reaps it and returns
  /// its exit code (128 + signal number when a signal killed it).
  static func exitStatus(_ pid: pid_t) -> Int32? { ChildProcess.exitStatus(pid) }

  /// How an exit code from `exitCode` reads: "exit 3", "killed by SIGSEGV".
  static func describe(exitCode code: Int32) -> String {
    guard code > 128, let name = strsignal(code - 128) else { return "exit \(code)" }
    return "killed by signal \(code - 128) (\(String(cString: name)))"
  }

}

/// Kills a child once, unless it has already exited.
private final class Watchdog: @unchecked Sendable {
  private let lock = NSLock()
  private var done = false
  private var fired = false

  func fire(_ pid: pid_t) {
    lock.lock()
    defer { lock.unlock() }
    if !done {
      fired = true
      kill(pid, SIGKILL)
    }
  }

  /// Stops the watchdog; true if it had killed the child.
  func disarm() -> Bool {
    lock.lock()
    defer { lock.unlock() }
    done = true
    return fired
  }
}

/// Reads lines from a child's pipe with a deadline.
final class LineReader {
  private let fd: Int32
  private var buffer: [UInt8] = []

  init(fd: Int32) { self.fd = fd }

  /// The next line, or nil at EOF or after `timeout` seconds.
  func next(timeout: Double) -> String? {
    let deadline = ContinuousClock.now + .milliseconds(Int(timeout * 1000))
    while true {
      if let newline = buffer.firstIndex(of: 10) {
        let line = String(decoding: buffer[..<newline], as: UTF8.self)
        buffer.removeSubrange(...newline)
        return line
      }
      let left = deadline - ContinuousClock.now
      guard left > .zero else { return nil }
      var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
      let ms = Int32(max(1, left.milliseconds))
      guard poll(&poller, 1, ms) > 0 else { continue }
      var chunk = [UInt8](repeating: 0, count: 4096)
      let n = read(fd, &chunk, chunk.count)
      guard n > 0 else { return nil }
      buffer += chunk[..<n]
    }
  }
}

/// A memory figure of a running process from /proc/PID/status (`VmRSS`: resident now;
/// `VmHWM`: the peak of its resident set over its life), in MB (10^6 bytes, as the
/// CLI's rows); nil if the process is gone. For long-lived processes such as the daemon,
/// measured from outside.
func processMemoryMB(pid: pid_t, field: String) -> Double? {
  TargetProcess.memoryKiB(of: pid, field: field).map { Double($0) * 1024 / 1e6 }
}

/// A failure of the bench itself (not of a measured tool).
struct BenchError: Error, CustomStringConvertible {
  var description: String
  init(_ description: String) { self.description = description }
}

extension Duration {
  var seconds: Double {
    let (s, atto) = components
    return Double(s) + Double(atto) / 1e18
  }
  var milliseconds: Int64 { Int64(seconds * 1000) }
  var microseconds: Double { seconds * 1e6 }
}
