import Foundation

/// Peak RSS of the CLI (a client of the daemon) and of the daemon.
struct MemoryBench {
  static let section = "memory (peak RSS)"
  static let bigStatus = "CLI swpatch status, 2 targets, 1,001 hooks"
  static let daemonPeak = "daemon swpatchd peak (VmHWM), 10 targets + libLLVM-15"
  /// Patched targets the daemon holds for its row (issue 7).
  static let daemonTargets = 10
  let env: BenchEnvironment
  let report: Report

  /// `status` and `status --json` with a registry of one target holding a one-function
  /// patch, then with a second target holding a 1,000-function patch; then the daemon's
  /// own figures. `symbolsPeakMB` comes from the symbol section.
  func run(symbolsPeakMB: [Double]) {
    progress("memory")
    do {
      let small = try BenchTarget.start(env, threads: 2, library: env.library(functions: 1))
      defer { small.stop() }
      try attach(small, functions: 1, in: env)
      // Drops the targets of earlier sections, which have exited, from the registry.
      _ = env.swpatch(["status"])
      measureStatus("CLI swpatch status, 1 target, 1 hook")
      let big = try BenchTarget.start(env, threads: 2, library: env.library(functions: 1000))
      defer { big.stop() }
      try attach(big, functions: 1000, in: env)
      measureStatus(Self.bigStatus)
    } catch {
      report.missing(Self.section, Self.bigStatus, .mb, because: "failed: \(error)")
    }
    report.add(
      Self.section, "CLI swpatch symbols, 1,000 names in libLLVM-15", .mb, symbolsPeakMB,
      note: symbolsPeakMB.isEmpty ? "not measured (see symbol section)" : nil)
    progress("memory: daemon with \(Self.daemonTargets) patched targets and libLLVM-15's symbols")
    measureDaemon()
  }

  private func attach(_ target: BenchTarget, functions: Int, in env: BenchEnvironment) throws {
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

  // MARK: The daemon

  /// The daemon's figures, taken on a daemon of its own (the main one's high-water mark
  /// holds whatever earlier sections made it do): idle, holding 10 targets with a
  /// one-function patch each, then after a dry-run attach to an 11th target that has
  /// libLLVM-15 loaded, which makes it parse and cache libLLVM-15's symbols.
  private func measureDaemon() {
    guard let llvm = env.llvm, FileManager.default.fileExists(atPath: llvm) else {
      report.missing(
        Self.section, Self.daemonPeak, .mb, because: "libLLVM-15 not installed (apt-get install libllvm15)")
      return
    }
    guard let own = env.privateState(under: env.scratch) else {
      report.missing(Self.section, Self.daemonPeak, .mb, because: "cannot make a state directory")
      return
    }
    defer { own.removeState() }
    do {
      let figures = try daemonFigures(own, llvm: llvm)
      for (name, value) in figures {
        report.add(Self.section, name, .mb, [value])
      }
    } catch {
      report.missing(Self.section, Self.daemonPeak, .mb, because: "failed: \(error)")
    }
  }

  /// (row name, MB) in the order taken; the last is the peak.
  private func daemonFigures(_ own: BenchEnvironment, llvm: String) throws -> [(String, Double)] {
    try own.startDaemon()
    guard let pid = own.daemonPID else { throw BenchError("the daemon wrote no pid file") }
    func resident() throws -> Double {
      guard let mb = processMemoryMB(pid: pid, field: "VmRSS") else { throw BenchError("the daemon exited") }
      return mb
    }
    var figures = [("daemon swpatchd idle (VmRSS)", try resident())]
    var targets: [BenchTarget] = []
    defer { targets.forEach { $0.stop() } }
    for _ in 0..<Self.daemonTargets {
      let target = try BenchTarget.start(own, threads: 1, library: own.library(functions: 1))
      targets.append(target)
      try attach(target, functions: 1, in: own)
    }
    try checkHolds(own, targets: targets.map(\.pid))
    let held = try resident()
    figures.append(("daemon swpatchd, \(Self.daemonTargets) patched targets (VmRSS)", held))
    let probe = try BenchTarget.start(own, threads: 1, library: own.library(functions: 1), preload: [llvm])
    defer { probe.stop() }
    try dryRunIntoLLVM(own, pid: probe.pid, llvm: llvm)
    let parsed = try resident()
    // libLLVM-15's symbol table is tens of MB parsed: no growth means the dry run did
    // not make the daemon read it, and the peak would not be the figure issue 7 asks.
    guard parsed - held >= 5 else {
      throw BenchError(
        "the daemon's RSS did not grow with libLLVM-15's symbols (\(format(held, .mb)) -> \(format(parsed, .mb)))"
      )
    }
    figures.append(("daemon swpatchd, + libLLVM-15 symbols cached (VmRSS)", parsed))
    guard let peak = processMemoryMB(pid: pid, field: "VmHWM") else { throw BenchError("the daemon exited") }
    figures.append((Self.daemonPeak, peak))
    return figures
  }

  /// `status --json` lists exactly the given pids as patched targets.
  private func checkHolds(_ own: BenchEnvironment, targets: [pid_t]) throws {
    let result = own.swpatch(["status", "--json"])
    guard result.succeeded,
      let object = try? JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any],
      let listed = object["targets"] as? [[String: Any]]
    else { throw BenchError("status --json: \(result.failure)") }
    let pids = Set(listed.compactMap { ($0["pid"] as? NSNumber)?.int32Value })
    guard pids == Set(targets) else {
      throw BenchError("the daemon holds pids \(pids.sorted()), expected \(targets.sorted())")
    }
  }

  /// A dry-run attach of a patch whose `old` is an LLVM C API function: the daemon
  /// resolves it in libLLVM-15 (parsing and caching that object) and writes nothing.
  private func dryRunIntoLLVM(_ own: BenchEnvironment, pid: pid_t, llvm: String) throws {
    let patch = own.scratch + "/llvm-probe.json"
    let object = (llvm as NSString).lastPathComponent
    let text = """
      {"id": "llvm-probe", "library": "\(own.library(functions: 1))", "functions": [
        {"old": "LLVMBuildAdd", "new": "bench_f0_v2", "object": "\(object)"}]}

      """
    try text.write(toFile: patch, atomically: true, encoding: .utf8)
    let result = own.swpatch(["attach", "\(pid)", patch, "--dry-run", "--json"], timeout: 120)
    let report = try? JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any]
    guard result.succeeded, report?["dry_run"] as? Bool == true else {
      throw BenchError("dry-run attach into \(object): \(result.failure)")
    }
  }
}
