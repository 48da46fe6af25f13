import ArgumentParser
import FoundationEssentials
import Glibc
import Logging
import SwpatchBase
import SwpatchDaemon
import SwpatchPatcher
import SwpatchProtocol
import SwpatchRegistry
import SwpatchState
import SwpatchSymbols

@main
// Every command names itself (`commandName`): without one the argument parser derives
// each name with String(describing:) when it builds the command tree, and those casts
// scan every protocol conformance of the binary at each start (issue 16).
struct Swpatch: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "swpatch",
    abstract: "Live-patch functions of running Linux x86-64 processes.",
    discussion: """
      swpatch loads a replacement library into a running process and redirects
      functions to it through a trampoline, without a restart. Each patched
      function has one hook with a stack of replacements; the top one runs.

      Quick start:
        swpatch attach 4242 fix.json        # patch pid 4242 as fix.json describes
        swpatch status                      # what is hooked, stacks top first
        swpatch disable 4242 fix-compute    # roll the patch back
        swpatch new 4242 compute            # a starting patch: C file, Makefile, patch file

      attach, enable, disable, status and log are served by the daemon (swpatchd),
      which owns the registry and runs every ptrace transaction. When none answers
      on the socket, swpatch (as root) starts one in the background; `swpatch
      daemon --foreground` runs it in the terminal or under systemd.

      Exit codes: 0 success, 1 refused or failed (nothing changed), 64 bad usage.
      Environment: SWPATCH_SOCKET (default /run/swpatch/swpatchd.sock),
      SWPATCH_STATE_DIR (default /var/lib/swpatch). Debug files:
      SWPATCH_DEBUG_ROOT (default /usr/lib/debug).
      """,
    subcommands: [
      Attach.self, Enable.self, Disable.self, Remove.self, Status.self, Rules.self, Run.self, Log.self,
      Symbols.self,
      New.self, Daemon.self,
    ])
}

/// Options every state-touching verb shares.
struct CommonOptions: ParsableArguments {
  @Flag(help: "Print machine-readable JSON (see docs/cli.md).")
  var json = false

  @OptionGroup var location: DaemonLocation

  func client() -> DaemonClient { location.client() }
}

/// Where the daemon listens and keeps its state.
struct DaemonLocation: ParsableArguments {
  @Option(help: "The daemon's socket (default: $SWPATCH_SOCKET or /run/swpatch/swpatchd.sock).")
  var socket: String?

  @Option(
    help: """
      State directory of a daemon this command starts (default: $SWPATCH_STATE_DIR or \
      /var/lib/swpatch).
      """)
  var stateDir: String?

  var socketPath: String { absolute(SocketLocation.resolve(explicit: socket).path) }
  var stateDirectory: String { absolute(StateDirectory.resolve(explicit: stateDir).path) }

  func client() -> DaemonClient { DaemonClient(socketPath: socketPath, stateDirectory: stateDirectory) }
}

/// The daemon runs elsewhere (cwd /): every path it gets must be absolute.
func absolute(_ path: String) -> String {
  path.hasPrefix("/")
    ? path
    : URL(fileURLWithPath: FileManager.default.currentDirectoryPath).appendingPathComponent(path)
      .standardizedFileURL.path
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
      let code = (error as? ErrorBody)?.code ?? errorCode(error)
      if json {
        print(encode(["error": ["code": code, "message": "\(error)"]]))
      } else {
        writeToStandardError("error: \(error)\n")
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
    let past = [
      "attach": "attached", "enable": "enabled", "disable": "disabled", "remove": "removed",
      "upgrade": "upgraded",
    ]
    let verb = report.dryRun ? "would \(report.operation)" : past[report.operation] ?? report.operation
    lines.append("\(verb) '\(report.patch)' on pid \(report.pid) (policy \(report.policy))")
    if report.dryRun || report.operation != "attach" || !report.alsoDisabled.isEmpty {
      lines += report.plan.map { "  " + $0 }
    }
    if report.operation == "attach" && !report.dryRun {
      let width = report.functions.map(\.function.count).max() ?? 0
      for f in report.functions {
        lines.append(
          "  \(f.function.padded(to: width))  \(f.oldAddr) -> \(f.replacement) \(f.address)"
        )
      }
    }
    // A dry run lists every undefined symbol of the library; an attach only those
    // swpatch bound itself (the loader's are as they always were).
    let externs = report.dryRun ? report.externs : report.externs.filter { $0.bindsTo == "swpatch" }
    if !externs.isEmpty {
      lines.append("  externs:")
      let width = externs.map(\.name.count).max() ?? 0
      for e in externs {
        let place: String
        switch e.bindsTo {
        case "swpatch": place = "swpatch: \(e.object ?? "?") \(e.address.map(\.description) ?? "?")"
        case "loader": place = "loader" + (e.object.map { ": \($0)" } ?? "")
        default: place = "nowhere (weak, NULL)"
        }
        lines.append("    \(e.name.padded(to: width))  \(place)")
      }
    }
    if !report.alsoDisabled.isEmpty {
      lines.append("  also disabled (atomic replace): \(report.alsoDisabled.joined(separator: ", "))")
    }
    lines += report.notes.map { "  note: " + $0 }
    if !report.dryRun {
      let waited =
        (report.retries > 0 ? ", after \(report.retries) retries" : "")
        + (report.threadsMoved > 0 ? ", \(report.threadsMoved) threads moved out of rewritten bytes" : "")
      lines.append(
        "  target stopped for \(report.stoppedMicroseconds) µs (consistency \(report.consistency)\(waited))")
      if report.threadsCaught > 0 {
        lines.append(
          "  \(report.threadsCaught) threads inside switched on return (transition took \(report.transitionMicroseconds) µs)"
        )
      }
    }
    return lines.joined(separator: "\n")
  }
}

struct Attach: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "attach",
    abstract: "Load a patch library into a running process and redirect its functions.",
    discussion: """
      Every function of the patch goes in together or none does. The first patch
      of a target fixes its disable policy: `stack` (disable only from the top,
      like undo) or `any` (disable in any order). A rebuilt library under a known
      id is refused (library_changed); --upgrade puts it in place of the old build.
      Example:
        swpatch attach 4242 Fixtures/build/fix-compute.json --policy any
      """)

  @Argument(
    help: ArgumentHelp(
      "Pid of the running target process, then the patch file (JSON, see docs/patch-format.md).",
      valueName: "pid> <patch-file"))
  var arguments: [String]
  @OptionGroup var allOf: AllOfOption
  @Flag(help: "With --all-of: record the rule for new processes only; patch no running process.")
  var ruleOnly = false
  @Option(help: "Disable policy for this target: stack or any (default stack, fixed by the first patch).")
  var policy: DisablePolicy?
  @Flag(help: "Print the plan and change nothing.") var dryRun = false
  @Option(help: "Seconds the library load (dlopen in the target) may take before it is abandoned.")
  var loadTimeout: Double = 5
  @Flag(help: "Patch even when the DWARF signatures of old and new differ (the report notes it).")
  var force = false
  @Flag(
    help:
      "Load a library that runs code when loaded (constructors). Refused by default: a constructor that aborts, exits or blocks runs inside the target."
  )
  var allowConstructors = false
  @Flag(
    help:
      "Put this build of the library in place of the one stored for a patch of the same id, in every stack position it holds, in one stop (same functions required)."
  )
  var upgrade = false
  @OptionGroup var consistency: ConsistencyOptions
  @OptionGroup var common: CommonOptions

  var patchFile: String { arguments.last ?? "" }

  func validate() throws {
    guard loadTimeout > 0 && loadTimeout <= 600 else {
      throw ValidationError("--load-timeout must be between 0 and 600 seconds")
    }
    try allOf.validate(arguments, names: ["<pid>", "<patch-file>"])
    if ruleOnly && allOf.allOf == nil { throw ValidationError("--rule-only needs --all-of PATH") }
  }

  func run() throws {
    if allOf.allOf != nil {
      let path = absolute(patchFile)
      guard let data = FileManager.default.contents(atPath: path) else {
        return try Output.run(json: common.json) { () throws -> AllOfReport in
          throw PatchFileError(path: patchFile, problem: "cannot be read (does it exist?)")
        } text: { _ in
          ""
        }
      }
      var options = OperationOptions(dryRun: dryRun, loadTimeout: loadTimeout, force: force)
      options.allowConstructors = allowConstructors
      options.upgrade = upgrade ? true : nil
      let request = Request(
        op: .attach, patch: String(decoding: data, as: UTF8.self), patchPath: path, policy: policy,
        options: consistency.apply(to: options), allOf: allOf.absolutePath, ruleOnly: ruleOnly ? true : nil)
      return try AllOfOption.run(request, common: common)
    }
    let pid = Int32(arguments[0])!
    try Output.run(json: common.json) {
      let path = absolute(patchFile)
      guard let data = FileManager.default.contents(atPath: path) else {
        throw PatchFileError(path: patchFile, problem: "cannot be read (does it exist?)")
      }
      var options = OperationOptions(dryRun: dryRun, loadTimeout: loadTimeout, force: force)
      options.allowConstructors = allowConstructors
      options.upgrade = upgrade ? true : nil
      let request = Request(
        op: .attach, pid: pid, patch: String(decoding: data, as: UTF8.self), patchPath: path,
        policy: policy, options: consistency.apply(to: options))
      return try common.client().call(request, as: OperationReport.self)
    } text: {
      Output.describe($0)
    }
  }
}

/// The arguments `enable` and `disable` share, and how both run.
struct PatchChange: ParsableArguments {
  @Argument(
    help: ArgumentHelp(
      "Pid of the patched process (omit with --all-of), then the id of the patch, as in its patch file.",
      valueName: "pid> <patch-id"))
  var arguments: [String]
  @OptionGroup var allOf: AllOfOption
  @Flag(help: "Print the plan and change nothing.") var dryRun = false
  @OptionGroup var consistency: ConsistencyOptions
  @OptionGroup var common: CommonOptions

  var patchID: String { arguments.last ?? "" }

  func validate() throws {
    try allOf.validate(arguments, names: ["<pid>", "<patch-id>"])
  }

  func run(_ operation: RequestOp) throws {
    if allOf.allOf != nil {
      let request = Request(
        op: operation, patchID: patchID, options: consistency.apply(to: OperationOptions(dryRun: dryRun)),
        allOf: allOf.absolutePath)
      return try AllOfOption.run(request, common: common)
    }
    let pid = Int32(arguments[0])!
    try Output.run(json: common.json) {
      let request = Request(
        op: operation, pid: pid, patchID: patchID,
        options: consistency.apply(to: OperationOptions(dryRun: dryRun)))
      return try common.client().call(request, as: OperationReport.self)
    } text: {
      Output.describe($0)
    }
  }
}

struct Enable: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "enable",
    abstract: "Re-enable a disabled patch: its functions go back on top of their stacks.",
    discussion: "Example:\n  swpatch enable 4242 fix-compute")
  @OptionGroup var change: PatchChange

  func run() throws {
    try change.run(.enable)
  }
}

struct Disable: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "disable",
    abstract: "Disable a patch: each of its functions falls back to what is below it.",
    discussion: """
      Under policy `stack` only a patch on top of every stack it sits in may be
      disabled; the refusal names the patches above it. Under `any` any patch may
      be disabled.
      Example:
        swpatch disable 4242 fix-compute --dry-run
      """)
  @OptionGroup var change: PatchChange

  func run() throws {
    try change.run(.disable)
  }
}

struct Remove: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "remove",
    abstract: "Take a disabled patch out for good: forget it and unload its library.",
    discussion: """
      The patch must be disabled, and no other patch may require it. Its library is
      unloaded (dlclose in the target, then its memfd closed) once no thread has a
      frame in its code, retried for --retry-for; a library another patch uses, or
      that another patch's prev cell points into, stays loaded and the report says why.
      With --all-of PATH, every process of the file, each on its own (and a disabled
      rule for the patch is forgotten). Examples:
        swpatch disable 4242 fix-compute && swpatch remove 4242 fix-compute
        swpatch remove --all-of /usr/sbin/app fix-compute
      """)
  @Argument(
    help: ArgumentHelp(
      "Pid of the patched process (omit with --all-of), then the id of the patch, as in its patch file.",
      valueName: "pid> <patch-id"))
  var arguments: [String]
  @OptionGroup var allOf: AllOfOption
  @Flag(help: "Print what would be removed and change nothing.") var dryRun = false
  @Option(
    help:
      "How long to retry while a thread is inside the library: 5s, 500ms, 2.5 (seconds); 0-600 s. (default: 5s)",
    transform: { text in
      guard let seconds = OperationOptions.seconds(parsing: text), seconds <= 600 else {
        throw ValidationError("'\(text)' is not a duration between 0 and 600 s; write e.g. 5s, 500ms or 2.5")
      }
      return seconds
    })
  var retryFor: Double = 5
  @OptionGroup var common: CommonOptions

  func validate() throws {
    try allOf.validate(arguments, names: ["<pid>", "<patch-id>"])
  }

  func run() throws {
    var options = OperationOptions(dryRun: dryRun)
    options.retryFor = retryFor
    let patchID = arguments.last ?? ""
    if allOf.allOf != nil {
      let request = Request(op: .remove, patchID: patchID, options: options, allOf: allOf.absolutePath)
      return try AllOfOption.run(request, common: common)
    }
    let pid = Int32(arguments[0])!
    try Output.run(json: common.json) {
      let request = Request(op: .remove, pid: pid, patchID: patchID, options: options)
      return try common.client().call(request, as: OperationReport.self)
    } text: {
      Output.describe($0)
    }
  }
}

struct Status: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "status",
    abstract: "Show patched targets, each hook's stack (top first) and each patch's state.",
    discussion: """
      A hook whose memory no longer holds what the registry recorded (something
      else rewrote the entry or the slot) is marked DRIFT with what was found;
      swpatch never "fixes" it silently. Non-root callers see only their own
      processes. Example:
        swpatch status 4242 --json
      """)
  @Argument(help: "Only this pid.") var pid: Int32?
  @OptionGroup var allOf: AllOfOption
  @OptionGroup var common: CommonOptions

  func validate() throws {
    if pid != nil && allOf.allOf != nil { throw ValidationError("give a pid or --all-of PATH, not both") }
  }

  func run() throws {
    try Output.run(json: common.json) {
      try common.client().call(
        Request(op: .status, pid: pid, allOf: allOf.allOf.map { _ in allOf.absolutePath }),
        as: StatusResult.self)
    } text: { output in
      var text = renderStatusText(StatusReport(targets: output.targets))
      for pid in output.dropped {
        text += "\n(pid \(pid) exited; its entries were dropped)"
      }
      if let rules = output.rules, !rules.isEmpty {
        text += (text.isEmpty ? "" : "\n") + Rules.render(rules)
      }
      return text
    }
  }
}

extension StatusReport {
  init(targets: [TargetStatus]) {
    self.init(targets: [TargetState]())
    self.targets = targets
  }
}

struct Log: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "log",
    abstract: "Show the audit log: every state-changing request, accepted or refused.",
    discussion: """
      One line per record: time, caller uid, target pid, operation, patch, result
      and how long the target was stopped. Exits of patched targets are recorded
      too. Non-root callers see only their own requests. Example:
        swpatch log --pid 4242 --json
      """)
  @Option(help: "Only records about this target pid.") var pid: Int32?
  @OptionGroup var common: CommonOptions

  func run() throws {
    try Output.run(json: common.json) {
      try common.client().call(Request(op: .log, pid: pid), as: [AuditRecord].self)
    } text: { records in
      records.map { r in
        var line = "\(r.time)  uid=\(r.uid.map(String.init) ?? "-")  pid=\(r.pid)  \(r.operation)"
        if let patch = r.patch { line += " \(patch)" }
        line += "  \(r.result)"
        if let stopped = r.stoppedUs { line += "  stopped \(stopped) µs" }
        if let message = r.message, r.result != "ok" { line += "  \(message)" }
        return line
      }.joined(separator: "\n")
    }
  }
}

struct Daemon: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "daemon",
    abstract: "Run swpatchd, the daemon that owns the registry and does all patching.",
    discussion: """
      The daemon listens on a Unix socket (mode 0660, in a directory only root can
      write), identifies each client by SO_PEERCRED (root may patch any process,
      other users only their own), runs one operation at a time, watches patched
      targets for exit, and appends every request to audit.log in its state
      directory. SIGTERM or SIGINT: it finishes the operation in progress, removes
      its socket and exits 0; patches stay live. Without --foreground it starts in
      the background and returns. Example:
        swpatch daemon --foreground --socket /run/swpatch/swpatchd.sock
      See docs/protocol.md and docs/swpatchd.service.
      """)
  @Flag(help: "Stay attached to the terminal (for operators and systemd).") var foreground = false
  @Option(
    help: "Group allowed to connect, by name or gid (default: $SWPATCH_SOCKET_GROUP, else root only).")
  var socketGroup: String?
  @OptionGroup var location: DaemonLocation

  func validate() throws {
    guard getuid() == 0 else { throw ValidationError("the daemon must run as root (it uses ptrace)") }
    _ = try group()
  }

  func group() throws -> UInt32? {
    guard let name = socketGroup ?? ProcessInfo.processInfo.environment["SWPATCH_SOCKET_GROUP"] else {
      return nil
    }
    if let gid = UInt32(name) { return gid }
    guard let entry = getgrnam(name) else { throw ValidationError("no group named '\(name)'") }
    return entry.pointee.gr_gid
  }

  func run() throws {
    let config = DaemonConfig(
      socketPath: location.socketPath, stateDirectory: location.stateDirectory, socketGroup: try group())
    guard foreground else {
      if let gid = config.socketGroup { setenv("SWPATCH_SOCKET_GROUP", "\(gid)", 1) }
      let ping = try location.client().call(Request(op: .ping), as: PingResult.self)
      print("swpatchd running: pid \(ping.pid), socket \(config.socketPath), state \(ping.stateDir)")
      return
    }
    var logger = Logger(label: "swpatchd")
    logger.logLevel = .info
    do {
      try DaemonServer.run(config, logger: logger)
    } catch {
      writeToStandardError("error: \(error)\n")
      throw ExitCode.failure
    }
  }
}

struct Symbols: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "symbols",
    abstract: "Resolve function names in a running process.",
    discussion: """
      Prints, per name, the object that defines it (file name, soname and path, any of
      which a patch file's `object` may give), its source file and line from DWARF
      (what a patch file's `file` matches), its runtime address, size,
      binding, kind (function or ifunc), the object's build id, the function's
      compiler clones (name.constprop.N, name.isra.N, name.part.N, name.cold), and
      from DWARF (the object's or its separate debug file's, under
      $SWPATCH_DEBUG_ROOT or /usr/lib/debug) its prototype and the lines where it
      was inlined; or why it cannot be resolved. Example:
        swpatch symbols 4242 compute dlopen --json
      """)
  @Argument(help: "Pid of the process.") var pid: Int32
  @Argument(help: "Function names.") var names: [String]
  @Flag(help: "Print machine-readable JSON.") var json = false

  struct Line: Encodable {
    var name: String
    /// The object's file name (what `object` names), its `DT_SONAME`, its path in maps.
    var object: String?
    var soname: String?
    var path: String?
    var address: String?
    var size: UInt64?
    var binding: String?
    var kind: String?
    var sympos: Int?
    var buildID: String?
    /// Compiler clones of the function in the same object (`compute.constprop.0`).
    var clones: [String]?
    /// The DWARF prototype (`int compute(int)`), when DWARF describes the function.
    var prototype: String?
    /// Where the function was inlined (`app.c:41`), when DWARF describes it.
    var inlineSites: [String]?
    /// The separate debug file the symbols or DWARF came from, if any.
    var debugFile: String?
    /// Where DWARF says the function is defined (`DW_AT_decl_file`, else the compile
    /// unit's name) and the line, when known: what a patch file's `file` matches.
    var sourceFile: String?
    var sourceLine: Int?
    var error: String?
    var code: String?
    enum CodingKeys: String, CodingKey {
      case name, object, soname, path, address, size, binding, kind, sympos, clones, prototype, error, code
      case buildID = "build_id"
      case inlineSites = "inline_sites"
      case debugFile = "debug_file"
      case sourceFile = "source_file"
      case sourceLine = "source_line"
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
          let dwarf = image.dwarfFunction($0)
          let object = image.object(containing: $0.address)
          return Line(
            name: name, object: $0.object, soname: object?.soname, path: $0.objectPath,
            address: hexAddress($0.address),
            size: $0.size, binding: $0.binding.rawValue, kind: $0.kind.rawValue, sympos: $0.sympos,
            buildID: $0.buildID, clones: image.clones(of: name, in: $0.object).map(\.name),
            prototype: dwarf.map { "\($0.prototype)" }, inlineSites: dwarf?.inlineSites.map(\.description),
            debugFile: object?.debugFile, sourceFile: dwarf?.file, sourceLine: dwarf?.line)
        }
      }
    } text: { lines in
      lines.map { line in
        if let error = line.error { return "\(line.name): error: \(error)" }
        return [
          line.name, line.object ?? "", line.address ?? "", "size=\(line.size ?? 0)",
          line.binding ?? "", line.kind ?? "", "sympos=\(line.sympos ?? 0)",
          "source=\(line.sourceFile.map { file in line.sourceLine.map { "\(file):\($0)" } ?? file } ?? "unknown")",
          "soname=\(line.soname ?? "none")", "path=\(line.path ?? "")", "build_id=\(line.buildID ?? "none")",
        ].joined(separator: "  ")
          + ((line.clones ?? []).isEmpty ? "" : "  clones=\(line.clones!.joined(separator: ","))")
          + ((line.inlineSites ?? []).isEmpty
            ? "" : "  inline_sites=\(line.inlineSites!.joined(separator: ","))")
          + (line.debugFile.map { "  debug_file=\($0)" } ?? "")
          + (line.prototype.map { "\n  \($0)" } ?? "")
      }.joined(separator: "\n")
    }
    if failed { throw ExitCode.failure }
  }
}
