import Foundation
import Glibc

/// The hot-function program of issue 14 (Fixtures/hot.c): workers inside `compute`
/// nearly all the time. For each consistency model and worker count: how long an
/// attach, disable and enable take, how long the target was stopped, and the longest
/// gap between two calls of any worker around the operation (the fixture measures it
/// itself; the workers are never the thread borrowed for `dlopen`, which is the main
/// thread). The gap includes the scheduler's doing on a busy 2-core machine: the stop
/// is the part swpatch owns.
struct HotBench {
  static let section = "hot-function program (workers inside compute ~100 % of the time)"
  let env: BenchEnvironment
  let report: Report

  /// `swpatch status` in place of an operation: the same client and daemon on the CPUs,
  /// no stop of the target. On a 2-core machine two busy workers are preempted for a
  /// scheduler slice whenever anything else runs: this row is that, without swpatch.
  static let baseline = "status (no stop)"

  static func label(_ op: String, threads: Int, consistency: String) -> String {
    "\(op), \(threads) worker\(threads == 1 ? "" : "s"), \(consistency)"
  }

  func run() {
    let reps = env.quick ? 3 : 8
    for threads in [1, 2] {
      for consistency in ["stack", "entry"] {
        progress("hot: \(threads) workers, --consistency \(consistency)")
        var samples: [String: [(stop: Double, gap: Double, wall: Double)]] = [:]
        var failure: String?
        do {
          try oneTarget(threads: threads, consistency: consistency, reps: reps, into: &samples)
        } catch {
          failure = "\(error)"
        }
        for op in ["attach", "disable", "enable", Self.baseline] {
          let name = Self.label(op, threads: threads, consistency: consistency)
          let rows = samples[op] ?? []
          report.add(
            Self.section, name + ": stop", .us, rows.map(\.stop), note: failure.map { "failed: \($0)" })
          report.add(Self.section, name + ": worker stall", .us, rows.map(\.gap))
          report.add(Self.section, name + ": wall", .ms, rows.map(\.wall))
        }
      }
    }
  }

  private func oneTarget(
    threads: Int, consistency: String, reps: Int,
    into samples: inout [String: [(stop: Double, gap: Double, wall: Double)]]
  ) throws {
    let (pid, pipes) = try Child.spawn(
      env.fixture("../hot"), ["\(threads)"], env: ["HOT_GAPS": "1"], pipes: true)
    Leftovers.shared.add(target: pid)
    defer {
      Child.stop(pid)
      Leftovers.shared.remove(target: pid)
      Glibc.close(pipes.stdin)
      Glibc.close(pipes.stdout)
    }
    let lines = HotLines(LineReader(fd: pipes.stdout))
    _ = try lines.next()
    let patch = env.scratch + "/hot-bench.json"
    try Data(
      #"{"id":"hot-bench","library":"\#(env.fixture("../libhot.so"))","functions":[{"old":"compute","new":"compute_v2"},{"old":"helper","new":"helper_v2"}]}"#
        .utf8
    ).write(to: URL(fileURLWithPath: patch))
    let options = ["--consistency", consistency]
    func measure(_ op: String, _ args: [String]) throws {
      lines.skipPending()
      let result = env.swpatch(args + (op == Self.baseline ? [] : options) + ["--json"])
      guard result.succeeded else { throw BenchError("swpatch \(op): \(result.failure)") }
      let object = try? JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any]
      let stop = (object?["stopped_us"] as? NSNumber)?.doubleValue ?? (op == Self.baseline ? 0 : .nan)
      // The lines covering the operation: until two whole lines after it ended.
      let gap = try lines.maxGap(following: 2)
      samples[op, default: []].append((stop, gap, result.wall.seconds * 1000))
    }
    try measure("attach", ["attach", "\(pid)", patch])
    for _ in 0..<reps {
      try measure("disable", ["disable", "\(pid)", "hot-bench"])
      try measure("enable", ["enable", "\(pid)", "hot-bench"])
      try measure(Self.baseline, ["status", "\(pid)"])
    }
  }
}

/// The fixture's status lines, read as they come.
private final class HotLines {
  let reader: LineReader

  init(_ reader: LineReader) { self.reader = reader }

  func next() throws -> [String: Double] {
    guard let line = reader.next(timeout: 10) else { throw BenchError("hot printed nothing for 10 s") }
    var fields: [String: Double] = [:]
    for field in line.split(separator: " ") {
      let parts = field.split(separator: "=")
      if parts.count == 2, let value = Double(parts[1]) { fields[String(parts[0])] = value }
    }
    return fields
  }

  /// Drops the lines already printed: they cover time before the operation.
  func skipPending() {
    while reader.next(timeout: 0.001) != nil {}
  }

  /// The longest `maxgap_us` over the line in progress and `count` more.
  func maxGap(following count: Int) throws -> Double {
    var gap = 0.0
    for _ in 0...count { gap = max(gap, try next()["maxgap_us"] ?? .nan) }
    return gap
  }
}
