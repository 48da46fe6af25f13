import Foundation
import SwpatchSymbols

/// Resolving 1 and 1,000 function names of libLLVM-15 loaded into a running fixture:
/// swpatch in-process (cold: an empty SymbolCache and a new ProcessImage, which opens and
/// indexes every object of the target; warm: the same names again on the kept image), the `swpatch symbols` command,
/// `nm -D` plus a lookup of its output, and gdb's `info address`.
struct SymbolBench {
  let env: BenchEnvironment
  let report: Report
  /// Peak RSS of `swpatch symbols` with 1,000 names, for the memory section.
  var cliPeakMB: [Double] = []

  var section: String { "symbol resolution in libLLVM-15 loaded into a target" }

  mutating func run() {
    guard let llvm = env.llvm, FileManager.default.fileExists(atPath: llvm) else {
      for name in ["swpatch in-process", "nm -D + lookup", "gdb info address"] {
        report.missing(section, name, .ms, because: "libLLVM-15 not installed (apt-get install libllvm15)")
      }
      return
    }
    do {
      let target = try BenchTarget.start(env, threads: 1, library: env.library(functions: 1), preload: [llvm])
      defer { target.stop() }
      let names = try pickNames(llvm, pid: target.pid)
      progress("symbols: \(names.count) LLVM C API names")
      for set in [[names[names.count / 2]], names] {
        measure(set, pid: target.pid, llvm: llvm)
      }
    } catch {
      report.missing(section, "swpatch in-process", .ms, because: "failed: \(error)")
    }
  }

  /// 1,000 exported C API functions (`LLVM*`), evenly spread over the sorted list, that
  /// resolve to exactly one definition in the target.
  private func pickNames(_ llvm: String, pid: Int32) throws -> [String] {
    let elf = try ElfFile(path: llvm)
    let image = try ProcessImage(pid: pid)
    let all = elf.names.filter { name in
      name.hasPrefix("LLVM") && elf.symbols(named: name).contains { $0.kind == .function }
        && (try? image.resolve(name)) != nil
    }.sorted()
    guard all.count >= 1000 else { throw BenchError("only \(all.count) LLVM* functions resolve") }
    return (0..<1000).map { all[$0 * all.count / 1000] }
  }

  private mutating func measure(_ names: [String], pid: Int32, llvm: String) {
    let reps = env.quick ? 2 : 5
    let toolReps = env.quick ? 1 : 3
    let label = names.count == 1 ? "1 name" : "\(names.count) names"
    var cold: [Double] = []
    var warm: [Double] = []
    var failure: String?
    for _ in 0..<reps {
      do {
        // Cold means cold: ProcessImage parses through the process-wide SymbolCache,
        // which would otherwise still hold libLLVM-15 from the previous repetition.
        SymbolCache.shared.removeAll()
        let start = ContinuousClock.now
        let image = try ProcessImage(pid: pid)
        for name in names { _ = try image.resolve(name) }
        cold.append((ContinuousClock.now - start).seconds * 1000)
        let again = ContinuousClock.now
        for name in names { _ = try image.resolve(name) }
        warm.append((ContinuousClock.now - again).seconds * 1000)
      } catch {
        failure = "failed: \(error)"
        break
      }
    }
    report.add(section, "swpatch in-process, \(label), cold", .ms, cold, note: failure)
    report.add(section, "swpatch in-process, \(label), warm", .ms, warm, note: failure)
    let cli = (0..<toolReps).map { _ in env.swpatch(["symbols", "\(pid)"] + names, timeout: 120) }
    report.add(
      section, "swpatch symbols command, \(label)", .ms,
      cli.filter(\.succeeded).map { $0.wall.seconds * 1000 },
      note: cli.first { !$0.succeeded }.map { "failed: \($0.failure)" })
    if names.count > 1 {
      cliPeakMB = [env.swpatchPeakRSS(["symbols", "\(pid)"] + names).1].compactMap { $0 }
    }
    report.add(
      section, "nm -D + lookup, \(label)", .ms, (0..<toolReps).compactMap { _ in nmLookup(names, llvm) })
    gdbInfoAddress(names, pid: pid, label: label, reps: toolReps)
  }

  /// `nm -D --defined-only` on the file, its output parsed into a table, the names looked up.
  private func nmLookup(_ names: [String], _ llvm: String) -> Double? {
    let start = ContinuousClock.now
    let result = Child.run("/usr/bin/nm", ["-D", "--defined-only", llvm], scratch: env.scratch, timeout: 60)
    guard result.succeeded else { return nil }
    var table: [Substring: Substring] = [:]
    for line in result.stdout.split(separator: "\n") {
      let fields = line.split(separator: " ")
      // `LLVMBuildAdd@@LLVM_15`: the name without its symbol version.
      if fields.count == 3, let name = fields[2].split(separator: "@").first { table[name] = fields[0] }
    }
    let found = names.filter { table[Substring($0)] != nil }.count
    return found == names.count ? (ContinuousClock.now - start).seconds * 1000 : nil
  }

  private func gdbInfoAddress(_ names: [String], pid: Int32, label: String, reps: Int) {
    let name = "gdb -p PID -batch, info address, \(label)"
    guard let gdb = env.gdb else {
      report.missing(section, name, .ms, because: "gdb not installed (apt-get install gdb)")
      return
    }
    let script = env.scratch + "/symbols.gdb"
    let commands = ["set debuginfod enabled off"] + names.map { "info address \($0)" } + ["detach", "quit"]
    try? (commands.joined(separator: "\n") + "\n").write(toFile: script, atomically: true, encoding: .utf8)
    let runs = (0..<reps).map { _ in
      Child.run(
        gdb, ["-nx", "-q", "-batch", "-p", "\(pid)", "-x", script], scratch: env.scratch, timeout: 180)
    }
    let good = runs.filter {
      $0.succeeded && $0.stdout.components(separatedBy: " is at ").count - 1 >= names.count
    }
    report.add(
      section, name, .ms, good.map { $0.wall.seconds * 1000 },
      note: good.count < runs.count ? "\(runs.count - good.count) run(s) failed: \(runs[0].failure)" : nil)
  }
}
