import Foundation

/// Peak RSS of the CLI, and of the daemon once there is one.
struct MemoryBench {
  static let section = "memory (peak RSS)"
  let env: BenchEnvironment
  let report: Report

  /// `status` and `status --json` while the registry holds a target with a
  /// 1,000-function patch; `symbolsPeakMB` comes from the symbol section.
  func run(symbolsPeakMB: [Double]) {
    progress("memory")
    let reps = env.quick ? 2 : 5
    do {
      let target = try BenchTarget.start(env, threads: 2, library: env.library(functions: 1000))
      defer { target.stop() }
      let attach = env.swpatch(["attach", "\(target.pid)", env.patchFile(functions: 1000)])
      guard attach.succeeded else { throw BenchError("attach: \(attach.failure)") }
      for args in [["status"], ["status", "--json"]] {
        let runs = (0..<reps).map { _ in env.swpatch(args) }
        report.add(
          Self.section, "CLI swpatch \(args.joined(separator: " ")) (1,000 hooks)", .mb,
          runs.filter(\.succeeded).map { Double($0.maxRSSKiB) * 1024 / 1e6 },
          note: runs.first { !$0.succeeded }.map { "failed: \($0.failure)" })
      }
    } catch {
      report.missing(Self.section, "CLI swpatch status (1,000 hooks)", .mb, because: "failed: \(error)")
    }
    report.add(
      Self.section, "CLI swpatch symbols, 1,000 names in libLLVM-15", .mb, symbolsPeakMB,
      note: symbolsPeakMB.isEmpty ? "not measured (see symbol section)" : nil)
    // The daemon's row: peakRSS(pid:) reads its VmHWM once swpatchd exists and holds
    // 10 patched targets and libLLVM-15's symbols.
    report.missing(
      Self.section, "daemon swpatchd (10 targets + libLLVM-15)", .mb, because: "not measured: no daemon yet")
  }
}
