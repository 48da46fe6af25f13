import Foundation
import Glibc

/// `attach --all-of` and `disable --all-of` over many processes of one file (issue 11:
/// 1,000 processes in at most 10 s). N copies of `bench-idle` (one thread that calls
/// `bench_f0` ten times a second and sleeps), all of one file; a daemon and state
/// directory of their own, so that the rule `attach --all-of` records never reaches a
/// later section's targets.
struct AllOfBench {
  static let section = "--all-of over many processes (bench-idle: 1 thread, asleep)"
  static let counts = [100, 1000]
  let env: BenchEnvironment
  let report: Report

  static func label(_ op: String, processes: Int, _ what: String) -> String {
    "\(op) --all-of, \(processes) processes: \(what)"
  }

  func run() {
    for count in Self.counts where env.runs("allof") || env.runs("allof-\(count)") {
      progress("--all-of: starting \(count) targets")
      do {
        try measure(count)
      } catch {
        report.missing(
          Self.section, "--all-of, \(count) processes", .s, because: "failed: \(error)")
      }
    }
  }

  private func measure(_ count: Int) throws {
    guard let bench = env.privateState(under: env.scratch) else {
      throw BenchError("cannot make a state directory")
    }
    defer { bench.removeState() }
    try bench.startDaemon()
    let program = bench.fixture("bench-idle")
    var targets: [pid_t] = []
    defer {
      progress("--all-of: stopping \(targets.count) targets")
      // SIGTERM to all first, so that they exit together; then each is reaped by pid.
      for pid in targets { kill(pid, SIGTERM) }
      for pid in targets {
        Child.stop(pid)
        Leftovers.shared.remove(target: pid)
      }
    }
    for _ in 0..<count {
      let (pid, _) = try Child.spawn(program, [], env: [:])
      Leftovers.shared.add(target: pid)
      targets.append(pid)
    }
    // Past the dynamic loader, and older than the age --all-of waits for.
    usleep(1_000_000)
    guard let dead = targets.first(where: { Child.exitStatus($0) != nil }) else {
      // Generous: the goal is 10 s, but a debug build on a loaded machine is far slower.
      let timeout = Double(count) * 3 + 60
      for (op, args) in [
        ("attach", ["attach", "--all-of", program, bench.patchFile(functions: 1)]),
        ("disable", ["disable", "--all-of", program, "bench-1"]),
      ] {
        progress("--all-of: \(op) over \(count) processes")
        let result = bench.swpatch(args + ["--json"], timeout: timeout)
        let stops = try check(result, op, patched: count)
        report.add(Self.section, Self.label(op, processes: count, "wall"), .s, [result.wall.seconds])
        report.add(
          Self.section, Self.label(op, processes: count, "per process"), .ms,
          [result.wall.seconds * 1000 / Double(count)])
        // The share of each process's turn that it spent stopped.
        report.add(Self.section, Self.label(op, processes: count, "stop per process"), .ms, stops)
      }
      return
    }
    throw BenchError("bench-idle \(dead) exited at start")
  }

  /// The summary must say every process was done and none failed; returns each
  /// process's stop, ms.
  private func check(_ result: ChildResult, _ op: String, patched count: Int) throws -> [Double] {
    guard result.succeeded else { throw BenchError("\(op) --all-of: \(result.failure)") }
    guard
      let object = try? JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any],
      let done = object["patched"] as? Int, let processes = object["processes"] as? [[String: Any]]
    else { throw BenchError("\(op) --all-of --json printed no summary: \(result.stdout.prefix(200))") }
    guard done == count, (object["failed"] as? [Any])?.isEmpty == true else {
      throw BenchError("\(op) --all-of did \(done) of \(count): \(result.stdout.prefix(300))")
    }
    return processes.compactMap { ($0["stopped_us"] as? NSNumber)?.doubleValue }.map { $0 / 1000 }
  }
}
