import Foundation

/// Peak RSS of the CLI, and of the daemon once there is one.
struct MemoryBench {
  static let section = "memory (peak RSS)"
  static let bigStatus = "CLI swpatch status, 2 targets, 1,001 hooks"
  let env: BenchEnvironment
  let report: Report

  /// `status` and `status --json` with a registry of one target holding a one-function
  /// patch, then with a second target holding a 1,000-function patch. `symbolsPeakMB`
  /// comes from the symbol section.
  func run(symbolsPeakMB: [Double]) {
    progress("memory")
    do {
      let small = try BenchTarget.start(env, threads: 2, library: env.library(functions: 1))
      defer { small.stop() }
      try attach(small, functions: 1)
      // Drops the targets of earlier sections, which have exited, from the registry.
      _ = env.swpatch(["status"])
      measureStatus("CLI swpatch status, 1 target, 1 hook")
      let big = try BenchTarget.start(env, threads: 2, library: env.library(functions: 1000))
      defer { big.stop() }
      try attach(big, functions: 1000)
      measureStatus(Self.bigStatus)
    } catch {
      report.missing(Self.section, Self.bigStatus, .mb, because: "failed: \(error)")
    }
    report.add(
      Self.section, "CLI swpatch symbols, 1,000 names in libLLVM-15", .mb, symbolsPeakMB,
      note: symbolsPeakMB.isEmpty ? "not measured (see symbol section)" : nil)
    // The daemon's row: peakRSS(pid:) reads its VmHWM once swpatchd exists and holds
    // 10 patched targets and libLLVM-15's symbols.
    report.missing(
      Self.section, "daemon swpatchd (10 targets + libLLVM-15)", .mb, because: "not measured: no daemon yet")
  }

  private func attach(_ target: BenchTarget, functions: Int) throws {
    let result = env.swpatch(["attach", "\(target.pid)", env.patchFile(functions: functions)])
    guard result.succeeded else { throw BenchError("attach: \(result.failure)") }
  }

  private func measureStatus(_ name: String) {
    let reps = env.quick ? 2 : 5
    for json in [false, true] {
      let runs = (0..<reps).map { _ in env.swpatchPeakRSS(json ? ["status", "--json"] : ["status"]) }
      report.add(
        Self.section, name + (json ? " --json" : ""), .mb, runs.compactMap(\.1),
        note: runs.first { $0.1 == nil }.map { "failed: \($0.0.failure)" })
    }
  }
}
