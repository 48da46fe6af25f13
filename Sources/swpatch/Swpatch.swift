import ArgumentParser
import Foundation
import SwpatchPatcher
import SwpatchRegistry
import SwpatchSymbols

@main
struct Swpatch: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "swpatch",
    abstract: "Live-patch functions of running Linux x86-64 processes.",
    discussion: """
      swpatch loads a replacement library into a running process and redirects functions
      to it through a trampoline, without a restart. Each patched function has one hook
      with a stack of replacements; the top one runs.

      Quick start:
        swpatch attach 4242 fix.json        # patch pid 4242 as fix.json describes
        swpatch status                      # what is hooked, stacks top first
        swpatch disable 4242 fix-compute    # roll the patch back

      Exit codes: 0 success, 1 refused or failed (nothing changed), 64 bad usage.
      State: SWPATCH_STATE_DIR (default /var/lib/swpatch).
      """,
    subcommands: [Attach.self, Enable.self, Disable.self, Status.self, Symbols.self])
}

/// Options every state-touching verb shares.
struct CommonOptions: ParsableArguments {
  @Flag(help: "Print machine-readable JSON (see docs/cli.md).")
  var json = false

  @Option(help: "State directory holding the registry (default: $SWPATCH_STATE_DIR or /var/lib/swpatch).")
  var stateDir: String?

  func engine() -> Engine {
    let engine = Engine(stateDirectory: RegistryStore.defaultDirectory(explicit: stateDir))
    // Waiting for a thread to leave a function can take seconds: say so (not in --json,
    // whose stdout must stay one document).
    if !json { engine.progress = { FileHandle.standardError.write(Data("\($0)\n".utf8)) } }
    return engine
  }
}

extension DisablePolicy: ExpressibleByArgument {}
extension Consistency: ExpressibleByArgument {}

/// `--consistency` and `--retry-for`, shared by attach, enable and disable.
struct ConsistencyOptions: ParsableArguments {
  @Option(help: "When functions switch: stack (no thread inside them; wait and retry) or entry (at once).")
  var consistency: Consistency = .stack

  @Option(
    help:
      "How long stack consistency retries while a thread is inside: 5s, 500ms, 2.5 (seconds); 0-600 s. (default: 5s)",
    transform: { text in
      guard let seconds = OperationOptions.seconds(parsing: text), seconds <= 600 else {
        throw ValidationError(
          "'\(text)' is not a duration between 0 and 600 s; write e.g. 5s, 500ms or 2.5")
      }
      return seconds
    })
  var retryFor: Double = 5

  func apply(to options: OperationOptions) -> OperationOptions {
    var options = options
    options.consistency = consistency
    options.retryFor = retryFor
    return options
  }
}

/// Prints a result or an error the same way for every verb and maps failures to exit 1.
enum Output {
  static func run<T: Encodable>(json: Bool, _ body: () throws -> T, text: (T) -> String) throws {
    do {
      let value = try body()
      print(json ? encode(value) : text(value))
    } catch let error as ExitCode {
      throw error
    } catch {
      if json {
        print(encode(["error": ["code": errorCode(error), "message": "\(error)"]]))
      } else {
        FileHandle.standardError.write(Data("error: \(error)\n".utf8))
      }
      throw ExitCode.failure
    }
  }

  static func encode<T: Encodable>(_ value: T) -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    return String(decoding: (try? encoder.encode(value)) ?? Data("{}".utf8), as: UTF8.self)
  }

  static func describe(_ report: OperationReport) -> String {
    var lines: [String] = []
    let past = ["attach": "attached", "enable": "enabled", "disable": "disabled"]
    let verb = report.dryRun ? "would \(report.operation)" : past[report.operation] ?? report.operation
    lines.append("\(verb) '\(report.patch)' on pid \(report.pid) (policy \(report.policy))")
    if report.dryRun || report.operation != "attach" || !report.alsoDisabled.isEmpty {
      lines += report.plan.map { "  " + $0 }
    }
    if report.operation == "attach" && !report.dryRun {
      let width = report.functions.map(\.function.count).max() ?? 0
      for f in report.functions {
        lines.append(
          "  \(f.function.padding(toLength: width, withPad: " ", startingAt: 0))  \(f.oldAddr) -> \(f.replacement) \(f.address)"
        )
      }
    }
    if !report.alsoDisabled.isEmpty {
      lines.append("  also disabled (atomic replace): \(report.alsoDisabled.joined(separator: ", "))")
    }
    lines += report.notes.map { "  note: " + $0 }
    if !report.dryRun {
      let waited = report.retries > 0 ? ", after \(report.retries) retries" : ""
      lines.append(
        "  target stopped for \(report.stoppedMicroseconds) µs (consistency \(report.consistency)\(waited))")
    }
    return lines.joined(separator: "\n")
  }
}

struct Attach: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Load a patch library into a running process and redirect its functions.",
    discussion: """
      Every function of the patch goes in together or none does. The first patch of a
      target fixes its disable policy: `stack` (disable only from the top, like undo) or
      `any` (disable in any order). Example:
        swpatch attach 4242 Fixtures/build/fix-compute.json --policy any
      """)

  @Argument(help: "Pid of the running target process.") var pid: Int32
  @Argument(help: "Patch file (JSON, see docs/patch-format.md).") var patchFile: String
  @Option(help: "Disable policy for this target: stack or any (default stack, fixed by the first patch).")
  var policy: DisablePolicy?
  @Flag(help: "Print the plan and change nothing.") var dryRun = false
  @Option(help: "Seconds the library load (dlopen in the target) may take before it is abandoned.")
  var loadTimeout: Double = 5
  @OptionGroup var consistency: ConsistencyOptions
  @OptionGroup var common: CommonOptions

  func validate() throws {
    guard loadTimeout > 0 && loadTimeout <= 600 else {
      throw ValidationError("--load-timeout must be between 0 and 600 seconds")
    }
  }

  func run() throws {
    try Output.run(json: common.json) {
      try common.engine().attach(
        pid: pid, patchPath: patchFile, policy: policy,
        options: consistency.apply(to: OperationOptions(dryRun: dryRun, loadTimeout: loadTimeout)))
    } text: {
      Output.describe($0)
    }
  }
}

/// The arguments `enable` and `disable` share, and how both run.
struct PatchChange: ParsableArguments {
  @Argument(help: "Pid of the patched process.") var pid: Int32
  @Argument(help: "Id of the patch, as in its patch file.") var patchID: String
  @Flag(help: "Print the plan and change nothing.") var dryRun = false
  @OptionGroup var consistency: ConsistencyOptions
  @OptionGroup var common: CommonOptions

  func run(_ operation: (Engine, Int32, String, OperationOptions) throws -> OperationReport) throws {
    try Output.run(json: common.json) {
      try operation(common.engine(), pid, patchID, consistency.apply(to: OperationOptions(dryRun: dryRun)))
    } text: {
      Output.describe($0)
    }
  }
}

struct Enable: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Re-enable a disabled patch: its functions go back on top of their stacks.",
    discussion: "Example:\n  swpatch enable 4242 fix-compute")
  @OptionGroup var change: PatchChange

  func run() throws {
    try change.run { try $0.enable(pid: $1, patchID: $2, options: $3) }
  }
}

struct Disable: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Disable a patch: each of its functions falls back to what is below it.",
    discussion: """
      Under policy `stack` only a patch on top of every stack it sits in may be disabled;
      the refusal names the patches above it. Under `any` any patch may be disabled.
      Example:
        swpatch disable 4242 fix-compute --dry-run
      """)
  @OptionGroup var change: PatchChange

  func run() throws {
    try change.run { try $0.disable(pid: $1, patchID: $2, options: $3) }
  }
}

struct Status: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Show patched targets, each hook's stack (top first) and each patch's state.",
    discussion: "Example:\n  swpatch status 4242 --json")
  @Argument(help: "Only this pid.") var pid: Int32?
  @OptionGroup var common: CommonOptions

  func run() throws {
    try Output.run(json: common.json) {
      let (report, dropped) = try common.engine().status(pid: pid)
      return StatusOutput(report: report, dropped: dropped.map(\.pid))
    } text: { output in
      var text = renderStatusText(output.report)
      for pid in output.dropped {
        text += "\n(pid \(pid) exited; its entries were dropped)"
      }
      return text
    }
  }
}

/// `status --json`: the registry's report plus targets dropped because they exited.
struct StatusOutput: Encodable {
  var report: StatusReport
  var dropped: [Int32]
  enum CodingKeys: String, CodingKey { case targets, dropped }
  func encode(to encoder: any Encoder) throws {
    var c = encoder.container(keyedBy: CodingKeys.self)
    try c.encode(report.targets, forKey: .targets)
    try c.encode(dropped, forKey: .dropped)
  }
}

struct Symbols: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Resolve function names in a running process.",
    discussion: """
      Prints, per name, the object that defines it, its runtime address, size, binding,
      kind (function or ifunc), the object's build id and the function's compiler clones
      (name.constprop.N, name.isra.N, name.part.N, name.cold), or why it cannot be resolved. Example:
        swpatch symbols 4242 compute dlopen --json
      """)
  @Argument(help: "Pid of the process.") var pid: Int32
  @Argument(help: "Function names.") var names: [String]
  @Flag(help: "Print machine-readable JSON.") var json = false

  struct Line: Encodable {
    var name: String
    var object: String?
    var path: String?
    var address: String?
    var size: UInt64?
    var binding: String?
    var kind: String?
    var sympos: Int?
    var buildID: String?
    /// Compiler clones of the function in the same object (`compute.constprop.0`).
    var clones: [String]?
    var error: String?
    var code: String?
    enum CodingKeys: String, CodingKey {
      case name, object, path, address, size, binding, kind, sympos, clones, error, code
      case buildID = "build_id"
    }
  }

  func run() throws {
    var failed = false
    try Output.run(json: json) {
      let image = try ProcessImage(pid: pid)
      return names.flatMap { name -> [Line] in
        let found = image.candidates(name)
        if found.isEmpty {
          failed = true
          do {
            _ = try image.resolve(name)
          } catch {
            return [Line(name: name, error: "\(error)", code: errorCode(error))]
          }
        }
        return found.map {
          Line(
            name: name, object: $0.object, path: $0.objectPath, address: hexAddress($0.address),
            size: $0.size, binding: $0.binding.rawValue, kind: $0.kind.rawValue, sympos: $0.sympos,
            buildID: $0.buildID, clones: image.clones(of: name, in: $0.object).map(\.name))
        }
      }
    } text: { lines in
      lines.map { line in
        if let error = line.error { return "\(line.name): error: \(error)" }
        return [
          line.name, line.object ?? "", line.address ?? "", "size=\(line.size ?? 0)",
          line.binding ?? "", line.kind ?? "", "sympos=\(line.sympos ?? 0)",
          "build_id=\(line.buildID ?? "none")",
        ].joined(separator: "  ")
          + ((line.clones ?? []).isEmpty ? "" : "  clones=\(line.clones!.joined(separator: ","))")
      }.joined(separator: "\n")
    }
    if failed { throw ExitCode.failure }
  }
}
