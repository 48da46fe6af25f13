import Foundation
import Glibc

/// swpatch, gdb and Frida on the same fixture (2 threads: main, which a patcher may
/// borrow, and a busy worker) and the same one-function patch, in rotating order within
/// each repetition so that every ratio compares runs made moments apart. Each tool gets
/// a fresh target; after its patch is live the target measures the patched call rate
/// against calling the replacement directly.
struct PeerBench {
  static let section = "attach: swpatch vs peers (2 threads, 1-function patch, library load included)"
  static let rateSection = "call rate (tight loop through bench_f0; ratios per 40 ms window pair)"
  let env: BenchEnvironment
  let report: Report

  enum Tool: String, CaseIterable {
    case swpatch, gdb, frida
  }

  /// What one tool's run gave: wall until the patch was live, worker stall, call rates.
  struct Run {
    var wall: Duration
    var stall: Duration
    var patchedOverDirect: [Double]
    var directRate: [Double]
    var unpatchedOverDirect: [Double] = []
  }

  /// A tool that failed this often is not run again (a tool that cannot work here
  /// would otherwise cost its timeout in every repetition).
  static let maxFailures = 2

  func run() {
    let reps = env.quick ? 2 : 5
    let windows = env.quick ? 4 : 8
    let unavailable = Tool.allCases.reduce(into: [Tool: String]()) { $0[$1] = reasonUnavailable($1) }
    // By repetition, so that each ratio pairs runs of the same repetition.
    var runs: [Tool: [Int: Run]] = [:]
    var failures: [Tool: [String]] = [:]
    for rep in 0..<reps {
      progress("peers: repetition \(rep + 1) of \(reps)")
      let order = Tool.allCases.indices.map { Tool.allCases[($0 + rep) % Tool.allCases.count] }
      for tool in order where unavailable[tool] == nil && failures[tool, default: []].count < Self.maxFailures
      {
        do {
          runs[tool, default: [:]][rep] = try once(tool, windows: windows)
        } catch {
          failures[tool, default: []].append("\(error)")
        }
      }
    }
    for tool in Tool.allCases {
      let failed = failures[tool, default: []]
      // A failed run is shown even when others succeeded: a peer that crashed the
      // target once is a finding, not noise.
      let note =
        unavailable[tool]
        ?? failed.first.map { "\(failed.count) run(s) failed, first: \($0)" }
      let done = (runs[tool] ?? [:]).sorted { $0.key < $1.key }.map(\.value)
      report.add(
        Self.section, "\(tool): wall until the patch is live", .ms, done.map { $0.wall.seconds * 1000 },
        note: note)
      report.add(Self.section, "\(tool): worker stall", .ms, done.map { $0.stall.seconds * 1000 })
      report.add(
        Self.rateSection, "\(tool) patched / replacement called directly", .ratio,
        done.flatMap(\.patchedOverDirect), note: note)
    }
    let swpatchRuns = runs[.swpatch] ?? [:]
    let ours = swpatchRuns.sorted { $0.key < $1.key }.map(\.value)
    report.add(
      Self.rateSection, "unpatched / replacement called directly", .ratio, ours.flatMap(\.unpatchedOverDirect)
    )
    report.add(Self.rateSection, "replacement called directly", .callsPerSecond, ours.flatMap(\.directRate))
    // What every swpatch command pays before the daemon does anything: the client's
    // start-up and one round trip (`status` does no ptrace work).
    let roundTrips = (0..<reps).map { _ in env.swpatch(["status"]) }
    report.add(
      Self.section, "swpatch status: wall (client start-up + one daemon round trip)", .ms,
      roundTrips.filter(\.succeeded).map { $0.wall.seconds * 1000 },
      note: roundTrips.first { !$0.succeeded }.map { "failed: \($0.failure)" })
    for peer in [Tool.gdb, .frida] {
      let theirs = runs[peer] ?? [:]
      let ratios = (0..<reps).compactMap { rep in
        swpatchRuns[rep].flatMap { ours in theirs[rep].map { ours.wall.seconds / $0.wall.seconds } }
      }
      report.add(
        Self.section, "swpatch wall / \(peer) wall (same repetition)", .ratio, ratios,
        note: ratios.isEmpty ? "no \(peer) figure" : nil)
    }
  }

  /// Why `tool` cannot run here, or nil.
  private func reasonUnavailable(_ tool: Tool) -> String? {
    switch tool {
    case .swpatch: return nil
    case .gdb: return env.gdb == nil ? "gdb not installed (apt-get install gdb)" : nil
    case .frida:
      guard let python = env.fridaPython else { return "frida not installed (no bench/.venv)" }
      let probe = Child.run(python, ["-c", "import frida"], scratch: env.scratch, timeout: 30)
      return probe.succeeded ? nil : "frida not installed (\(probe.failure))"
    }
  }

  private func once(_ tool: Tool, windows: Int) throws -> Run {
    let target = try BenchTarget.start(env, threads: 2, library: env.library(functions: 1))
    defer { target.stop() }
    switch tool {
    case .swpatch:
      let sample = try env.measure(["attach", "\(target.pid)", env.patchFile(functions: 1)], on: target)
      var run = try rates(sample.wall, sample.gap, target, windows: windows)
      _ = try env.measure(["disable", "\(target.pid)", "bench-1"], on: target)
      run.unpatchedOverDirect = try target.rates(count: windows).map { $0.patched / $0.direct }
      return run
    case .gdb:
      try target.beginGap()
      let result = Child.run(
        env.gdb!, ["-nx", "-q", "-batch", "-p", "\(target.pid)", "-x", try gdbScript()],
        scratch: env.scratch, timeout: 60)
      let gap = try target.endGap()
      guard result.succeeded, result.stdout.contains("patched old=") else {
        throw BenchError("gdb: \(result.failure)")
      }
      return try rates(result.wall, gap, target, windows: windows)
    case .frida:
      return try frida(target, windows: windows)
    }
  }

  private func rates(_ wall: Duration, _ gap: Duration, _ target: BenchTarget, windows: Int) throws -> Run {
    let pairs = try target.rates(count: windows)
    return Run(
      wall: wall, stall: gap, patchedOverDirect: pairs.map { $0.patched / $0.direct },
      directRate: pairs.map { $0.direct / 1e6 })
  }

  /// gdb calls dlopen in the target, looks the replacement up and writes a 14-byte
  /// absolute jump at the old function's entry (the replacement is too far for rel32),
  /// with every thread stopped from attach to detach.
  private func gdbScript() throws -> String {
    let path = env.scratch + "/patch.gdb"
    let script = """
      set confirm off
      set pagination off
      set debuginfod enabled off
      set $h = (void *) dlopen("\(env.library(functions: 1))", 2)
      set $new = (unsigned long) dlsym($h, "bench_f0_v2")
      set $old = (unsigned long) &bench_f0
      set {unsigned char[6]} $old = {0xff, 0x25, 0, 0, 0, 0}
      set {unsigned long} ($old + 6) = $new
      printf "patched old=%lx new=%lx\\n", $old, $new
      detach
      quit

      """
    try script.write(toFile: path, atomically: true, encoding: .utf8)
    return path
  }

  /// bench/frida-patch.py: attach, Module.load, Interceptor.replaceFast, "live"; the
  /// patch holds until we write a line, then it detaches (which reverts the patch).
  private func frida(_ target: BenchTarget, windows: Int) throws -> Run {
    try target.beginGap()
    let start = ContinuousClock.now
    let (pid, pipes) = try Child.spawn(
      env.fridaPython!,
      [env.fridaScript, "\(target.pid)", env.library(functions: 1), "bench_f0", "bench_f0_v2"],
      env: [:], stderrFile: env.scratch + "/frida.err", pipes: true)
    let reader = LineReader(fd: pipes.stdout)
    defer {
      close(pipes.stdin)
      close(pipes.stdout)
      _ = Child.waitBounded(pid, timeout: 10)
    }
    let line = reader.next(timeout: 30)
    let wall = ContinuousClock.now - start
    guard line == "live" else {
      kill(pid, SIGKILL)
      let log = (try? String(contentsOfFile: env.scratch + "/frida.err", encoding: .utf8)) ?? ""
      throw BenchError("frida: \(line ?? "no answer within 30 s") \(log.suffix(300))")
    }
    let gap = try target.endGap()
    let run = try rates(wall, gap, target, windows: windows)
    _ = write(pipes.stdin, "\n", 1)
    guard reader.next(timeout: 10) == "detached" else {
      kill(pid, SIGKILL)
      throw BenchError("frida: did not detach within 10 s")
    }
    return run
  }
}
