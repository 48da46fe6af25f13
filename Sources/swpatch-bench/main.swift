// swpatch-bench: `make bench` (docs/benchmarks.md). Measures swpatch against gdb and
// Frida on the bench's own fixtures, prints a table and writes bench/results.json.
import Foundation

Leftovers.shared.stopOnInterrupt()
do {
  let env = try BenchEnvironment.fromArguments(CommandLine.arguments)
  defer { env.cleanUp() }
  // The daemon starts here, so no measured row includes its start.
  try env.startDaemon()
  let report = Report()
  if env.runs("startup") { StartupBench(env: env, report: report).run() }
  if env.runs("operations") { OperationBench(env: env, report: report).run() }
  if env.runs("peers") { PeerBench(env: env, report: report).run() }
  if env.runs("hot") { HotBench(env: env, report: report).run() }
  var symbols = SymbolBench(env: env, report: report)
  if env.runs("symbols") { symbols.run() }
  if env.runs("memory") { MemoryBench(env: env, report: report).run(symbolsPeakMB: symbols.cliPeakMB) }
  AllOfBench(env: env, report: report).run()
  Targets(report: report).evaluate()
  print(report.table)
  try report.json().write(to: URL(fileURLWithPath: env.output))
  print("\nwrote \(env.output)")
} catch {
  FileHandle.standardError.write(Data("swpatch-bench: \(error)\n".utf8))
  exit(1)
}
