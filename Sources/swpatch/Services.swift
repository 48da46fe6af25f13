import ArgumentParser
import FoundationEssentials
import Glibc
import SwpatchBase
import SwpatchDaemon
import SwpatchProcess
import SwpatchProtocol

/// `--all-of PATH`: every process of an executable or shared library instead of one pid.
struct AllOfOption: ParsableArguments {
  @Option(
    help: ArgumentHelp(
      "Every process that runs this executable, or has this shared library mapped, instead of one pid.",
      valueName: "path"))
  var allOf: String?

  var absolutePath: String { absolute(allOf ?? "") }

  /// Checks the positional arguments: all of `names` without --all-of, all but the pid
  /// (the first) with it.
  func validate(_ arguments: [String], names: [String]) throws {
    let expected = allOf == nil ? names : Array(names.dropFirst())
    guard arguments.count == expected.count else {
      throw ValidationError(
        "expected \(expected.joined(separator: " "))\(allOf == nil ? " (or --all-of PATH \(names.dropFirst().joined(separator: " ")))" : "")"
      )
    }
    if allOf == nil && Int32(arguments[0]).map({ $0 > 0 }) != true {
      throw ValidationError("'\(arguments[0])' is not a pid")
    }
  }

  /// Sends an `--all-of` request and prints its summary; exit 1 when a process failed.
  static func run(_ request: Request, common: CommonOptions) throws {
    var failed = false
    try Output.run(json: common.json) {
      let report = try common.client().call(request, as: AllOfReport.self)
      failed = !report.failed.isEmpty
      return report
    } text: {
      describe($0)
    }
    if failed { throw ExitCode.failure }
  }

  static func describe(_ report: AllOfReport) -> String {
    let past = ["attach": "attached", "enable": "enabled", "disable": "disabled", "remove": "removed"]
    let verb = report.dryRun ? "would \(report.operation)" : past[report.operation] ?? report.operation
    var lines = [
      "\(verb) '\(report.patch)' on \(report.patched) of \(report.processes.count) processes of \(report.path): "
        + "patched \(report.patched), already \(report.already), skipped \(report.skipped.count), failed \(report.failed.count)"
    ]
    for outcome in report.skipped {
      lines.append("  skipped pid \(outcome.pid): \(outcome.message ?? outcome.code ?? "")")
    }
    for outcome in report.failed {
      lines.append("  failed pid \(outcome.pid): \(outcome.message ?? outcome.code ?? "")")
    }
    switch report.rule {
    case "recorded": lines.append("  rule recorded: new processes of \(report.path) get '\(report.patch)'")
    case "enabled":
      lines.append("  rule enabled again: new processes of \(report.path) get '\(report.patch)'")
    case "disabled": lines.append("  rule disabled: new processes of \(report.path) are left alone")
    case "removed": lines.append("  rule removed: it was disabled, and '\(report.patch)' is gone")
    default: break
    }
    lines += report.notes.map { "  note: " + $0 }
    return lines.joined(separator: "\n")
  }
}

struct Rules: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "rules",
    abstract: "List the rules that patch new processes of a file (attach --all-of).",
    discussion: """
      `attach --all-of PATH` records a rule: while it is enabled the daemon patches
      every new process of PATH as it appears. `disable --all-of PATH ID` turns it off,
      `enable --all-of PATH ID` on again. New processes a rule's patch could not be
      applied to are listed under it (they run on untouched). Example:
        swpatch rules --json
      """)
  @OptionGroup var common: CommonOptions

  func run() throws {
    try Output.run(json: common.json) {
      try common.client().call(Request(op: .rules), as: [RuleStatus].self)
    } text: {
      $0.isEmpty ? "no rules" : Self.render($0)
    }
  }

  static func render(_ rules: [RuleStatus]) -> String {
    var lines: [String] = []
    for rule in rules {
      lines.append(
        "rule \(rule.path)  patch=\(rule.patch)  \(rule.enabled ? "enabled" : "disabled")  uid=\(rule.uid)  applied=\(rule.applied)  since \(rule.created)"
      )
      for failure in rule.failures {
        lines.append("  not applied to pid \(failure.pid): \(failure.message ?? failure.code ?? "")")
      }
    }
    return lines.joined(separator: "\n")
  }
}

struct Run: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "run",
    abstract: "Start a program with patches applied before its main runs (for CI).",
    discussion: """
      The program starts stopped at its entry point (after the dynamic loader mapped
      its libraries, before its main), every --patch is attached through the daemon
      like `attach`, then it runs. Standard input, output and error are the program's;
      SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1/2 sent to swpatch are passed on. swpatch
      exits with the program's exit status (128+N if signal N killed it). A patch that
      cannot be applied ends the program before its main, with the error and exit 1.
      Example:
        swpatch run --patch fix.json -- ./server --port 8080
      """)
  @Option(help: ArgumentHelp("A patch file to apply (repeatable).", valueName: "patch-file"))
  var patch: [String] = []
  @OptionGroup var consistency: ConsistencyOptions
  @OptionGroup var location: DaemonLocation
  @Argument(parsing: .captureForPassthrough, help: "-- PROGRAM [ARGS...]") var command: [String] = []

  var program: [String] { command.first == "--" ? Array(command.dropFirst()) : command }

  func validate() throws {
    guard !program.isEmpty else { throw ValidationError("name the program to run after --") }
  }

  func run() throws {
    let path = try Self.resolve(program[0])
    let patches = try patch.map { file -> (String, String) in
      let absolutePath = absolute(file)
      guard let data = FileManager.default.contents(atPath: absolutePath) else {
        throw Self.fail("patch file \(file) cannot be read (does it exist?)")
      }
      return (absolutePath, String(decoding: data, as: UTF8.self))
    }
    let pid: pid_t
    do {
      pid = try ChildProcess.startStoppedAtEntry(path, Array(program.dropFirst()))
    } catch {
      throw Self.fail("\(error)")
    }
    ChildProcess.forwardSignals(to: pid)
    for (patchPath, text) in patches {
      let request = Request(
        op: .attach, pid: pid, patch: text, patchPath: patchPath,
        options: consistency.apply(to: OperationOptions()))
      do {
        _ = try location.client().call(request, as: OperationReport.self)
      } catch {
        kill(pid, SIGKILL)
        _ = ChildProcess.waitForExit(pid)
        throw Self.fail("\(patchPath): \(error); the program was not started")
      }
    }
    kill(pid, SIGCONT)
    let code = ChildProcess.waitForExit(pid)
    throw ExitCode(code)
  }

  /// The program as `execvp` would find it: a name without a slash is looked up in PATH.
  static func resolve(_ name: String) throws -> String {
    if name.contains("/") { return absolute(name) }
    let folders = (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":")
    for folder in folders where FileManager.default.isExecutableFile(atPath: "\(folder)/\(name)") {
      return "\(folder)/\(name)"
    }
    throw fail("\(name): not found in PATH")
  }

  static func fail(_ message: String) -> ExitCode {
    writeToStandardError("swpatch run: error: \(message)\n")
    return ExitCode.failure
  }
}
