import Foundation

/// One swpatch operation as the bench saw it: the stop swpatch reports, the wall time of
/// the command, and the longest gap the target's busy thread saw.
struct OperationSample {
  var stoppedMicroseconds: Double
  var wall: Duration
  var gap: Duration
}

extension BenchEnvironment {
  /// Runs `swpatch ARGS --json` against `target` while its busy thread measures gaps.
  func measure(_ args: [String], on target: BenchTarget) throws -> OperationSample {
    try target.beginGap()
    let result = swpatch(args + ["--json"])
    let gap = try target.endGap()
    guard result.succeeded else { throw BenchError("swpatch \(args[0]): \(result.failure)") }
    guard
      let object = try? JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any],
      let stopped = (object["stopped_us"] as? NSNumber)?.doubleValue
    else { throw BenchError("swpatch \(args[0]) --json printed no stopped_us: \(result.stdout.prefix(200))") }
    return OperationSample(stoppedMicroseconds: stopped, wall: result.wall, gap: gap)
  }

  func patchFile(functions: Int) -> String { fixture("bench-\(functions).json") }
  func library(functions: Int) -> String { fixture("libbench-\(functions).so") }
}

/// Target stop time and wall time of attach, enable (library already loaded) and
/// disable, over thread counts and patch sizes. Each repetition uses a fresh target, so
/// every attach loads the library; enable and disable then cycle on that target.
struct OperationBench {
  static let section = "swpatch operations (stop = stopped_us; stall = longest gap the busy thread saw)"
  let env: BenchEnvironment
  let report: Report

  /// Thread counts and patch sizes; the last one repeats the first with the registry on
  /// tmpfs, to show what the fsyncs of saving it (done while the target is stopped) cost.
  static let configs: [(threads: Int, functions: Int, tmpfs: Bool)] = [
    (1, 1, false), (2, 1, false), (16, 1, false), (200, 1, false), (2, 100, false), (2, 1000, false),
    (1, 1, true),
  ]

  /// `enable --consistency entry`, as its rows are labelled.
  static let enableEntry = "enable (entry consistency)"

  static func label(_ op: String, threads: Int, functions: Int, tmpfs: Bool = false) -> String {
    "\(op) \(functions) fn, \(threads) thr" + (tmpfs ? ", state on tmpfs" : "")
  }

  func run() {
    let reps = env.quick ? 2 : 5
    let cycles = env.quick ? 1 : 3
    for (threads, functions, tmpfs) in Self.configs {
      progress(
        "operations: \(threads) threads, \(functions)-function patch\(tmpfs ? ", state on tmpfs" : "")")
      var samples: [String: [OperationSample]] = [:]
      var failure: String?
      let bench = tmpfs ? env.onTmpfs() : env
      if bench == nil { failure = "cannot make a directory in /dev/shm" }
      defer { if tmpfs { bench?.removeState() } }
      if tmpfs, let bench {
        do { try bench.startDaemon() } catch { failure = "\(error)" }
      }
      for _ in 0..<reps where failure == nil {
        do {
          try oneTarget(bench!, threads: threads, functions: functions, cycles: cycles, into: &samples)
        } catch {
          failure = "\(error)"
        }
      }
      for op in ["attach", "enable", "disable", Self.enableEntry] {
        let name = Self.label(op, threads: threads, functions: functions, tmpfs: tmpfs)
        emit(name, threads: threads, samples[op] ?? [], failure: failure)
      }
    }
  }

  private func oneTarget(
    _ env: BenchEnvironment, threads: Int, functions: Int, cycles: Int,
    into samples: inout [String: [OperationSample]]
  ) throws {
    let target = try BenchTarget.start(env, threads: threads, library: env.library(functions: functions))
    defer { target.stop() }
    let pid = "\(target.pid)"
    samples["attach", default: []].append(
      try env.measure(["attach", pid, env.patchFile(functions: functions)], on: target))
    for _ in 0..<cycles {
      samples["disable", default: []].append(
        try env.measure(["disable", pid, "bench-\(functions)"], on: target))
      samples["enable", default: []].append(
        try env.measure(["enable", pid, "bench-\(functions)"], on: target))
      // The same switch without the stack check (no thread is ever inside bench_fK
      // for long here, so both switch at once): the difference is what unwinding every
      // thread's stack adds to the stop.
      _ = try env.measure(["disable", pid, "bench-\(functions)", "--consistency", "entry"], on: target)
      samples[Self.enableEntry, default: []].append(
        try env.measure(["enable", pid, "bench-\(functions)", "--consistency", "entry"], on: target))
    }
    target.mode = .nap
  }

  private func emit(_ name: String, threads: Int, _ samples: [OperationSample], failure: String?) {
    let note = failure.map { "failed: \($0)" }
    report.add(Self.section, name + ": stop", .us, samples.map(\.stoppedMicroseconds), note: note)
    report.add(Self.section, name + ": wall", .ms, samples.map { $0.wall.seconds * 1000 })
    // With one thread the busy thread is the one borrowed for dlopen; otherwise it is
    // another thread, the one the "≤ 1 ms" target is about.
    report.add(
      Self.section, name + (threads == 1 ? ": stall (only thread)" : ": stall (other thread)"), .us,
      samples.map(\.gap.microseconds))
  }
}

/// Progress on stderr, so the table on stdout stays clean.
func progress(_ message: String) {
  FileHandle.standardError.write(Data("bench: \(message)\n".utf8))
}
