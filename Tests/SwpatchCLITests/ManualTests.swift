import ArgumentParser
import Foundation
import Testing

@testable import swpatch

/// The man pages and completions are generated from the argument parser's definitions
/// (`make man`, `make deb`; docs/operations.md). These tests walk the command tree, from
/// `Swpatch.configuration` and the parser's own dump of every command's arguments, and
/// check that each verb and each flag is documented and reaches man/swpatch.1 and the
/// bash, zsh and fish completions: a flag added without help, or without `make man`,
/// fails here.
@Suite struct ManualTests {
  static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().path

  /// One command of the tree: its path of verbs from the top, and its arguments as the
  /// parser describes them (`--experimental-dump-help`, what generate-manual reads).
  struct Command {
    var path: [String]
    var arguments: [[String: Any]]
    var verb: String { path.last ?? "" }
  }

  /// Every command, walking the configuration's subcommands; the arguments of each come
  /// from the parser's dump of that command.
  static func commands() throws -> [Command] {
    func walk(_ type: ParsableCommand.Type, _ path: [String]) throws -> [Command] {
      let dump = try #require(
        JSONSerialization.jsonObject(with: Data(type._dumpHelp().utf8)) as? [String: Any])
      let command = try #require(dump["command"] as? [String: Any])
      let arguments = command["arguments"] as? [[String: Any]] ?? []
      var found = [Command(path: path, arguments: arguments)]
      for sub in type.configuration.subcommands {
        found += try walk(sub, path + [sub._commandName])
      }
      return found
    }
    return try walk(Swpatch.self, ["swpatch"])
  }

  /// The long names (`json` for `--json`) of a command's displayed flags and options.
  static func longNames(_ argument: [String: Any]) -> [String] {
    ((argument["names"] as? [[String: Any]]) ?? []).compactMap {
      $0["kind"] as? String == "long" ? $0["name"] as? String : nil
    }
  }

  static func displayed(_ command: Command) -> [[String: Any]] {
    command.arguments.filter { $0["shouldDisplay"] as? Bool ?? true }
  }

  static func read(_ relative: String) throws -> String {
    try String(contentsOfFile: root + "/" + relative, encoding: .utf8)
  }

  /// The part of man/swpatch.1 that describes one verb: from its `.It Em verb` to the
  /// next verb's.
  static func manSection(_ page: String, verb: String) -> String? {
    let lines = page.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
    guard let start = lines.firstIndex(of: ".It Em \(verb)") else { return nil }
    let end = lines[(start + 1)...].firstIndex { $0.hasPrefix(".It Em ") } ?? lines.endIndex
    return lines[start..<end].joined(separator: "\n")
  }

  @Test func theTreeHasEveryVerb() throws {
    let verbs = try Self.commands().map(\.verb)
    for verb in [
      "attach", "enable", "disable", "remove", "status", "rules", "run", "log", "symbols", "new", "daemon",
    ] {
      #expect(verbs.contains(verb), "\(verb) is not in the command tree")
    }
    #expect(try Self.commands().allSatisfy { !$0.arguments.isEmpty || $0.verb == "help" })
  }

  @Test func everyVerbAndArgumentHasHelp() throws {
    for command in try Self.commands() {
      #expect(command.path.count == 1 || !command.verb.isEmpty)
      for argument in Self.displayed(command) {
        let abstract = argument["abstract"] as? String ?? ""
        #expect(
          !abstract.isEmpty,
          "\(command.path.joined(separator: " ")): argument \(argument["valueName"] ?? "?") has no help text")
      }
    }
  }

  @Test func theManPageNamesEveryVerbAndFlag() throws {
    let page = try Self.read("man/swpatch.1")
    let commands = try Self.commands()
    #expect(commands.count > 10)
    for command in commands.dropFirst() where command.verb != "help" {
      let section = try #require(
        Self.manSection(page, verb: command.verb), "man/swpatch.1 has no '\(command.verb)' (run make man)")
      for argument in Self.displayed(command) {
        for name in Self.longNames(argument) {
          #expect(
            // `.It Fl -json`, or `.It Fl h , -help` beside a short name.
            section.contains("Fl -\(name)") || section.contains(" , -\(name)"),
            "man/swpatch.1: '\(command.verb)' does not list --\(name) (run make man)")
        }
        if argument["kind"] as? String == "positional", let value = argument["valueName"] as? String {
          #expect(section.contains(value), "man/swpatch.1: '\(command.verb)' does not name <\(value)>")
        }
      }
    }
  }

  @Test(arguments: [CompletionShell.bash, .zsh, .fish])
  func theCompletionsOfferEveryVerbAndFlag(shell: CompletionShell) throws {
    let script = Swpatch.completionScript(for: shell)
    let lines = script.split(separator: "\n").map(String.init)
    let commands = try Self.commands()
    for command in commands.dropFirst() {
      #expect(script.contains(command.verb), "\(shell): no '\(command.verb)'")
      for argument in Self.displayed(command) {
        for name in Self.longNames(argument) {
          switch shell {
          case .fish:
            // Each fish line names the command it completes for.
            let path = command.path.joined(separator: " ")
            #expect(
              lines.contains { $0.contains("\"\(path)\"") && $0.contains("-l '\(name)'") },
              "fish: '\(path)' does not offer --\(name)")
          default:
            #expect(script.contains("--\(name)"), "\(shell): no --\(name) (for \(command.verb))")
          }
        }
      }
    }
  }

  /// swpatch-patch(5) is docs/patch-format.md rendered by packaging/md2man.py; the copy in
  /// man/ must be that rendering (run `make man` after changing the format doc).
  @Test(
    .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/python3"), "needs /usr/bin/python3"))
  func thePatchFormatPageIsTheFormatDoc() throws {
    let page = try Self.read("man/swpatch-patch.5")
    let header = try #require(page.split(separator: "\n").first.map(String.init))
    let fields = header.split(separator: "\"").map(String.init)
    // .TH "SWPATCH\-PATCH" "5" "DATE" "swpatch VERSION" "File Formats Manual"
    try #require(fields.count >= 8, "unexpected header \(header)")
    let date = fields[5]
    let version = fields[7].replacingOccurrences(of: "swpatch ", with: "")
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
    process.arguments = [
      Self.root + "/packaging/md2man.py", Self.root + "/docs/patch-format.md", date, version,
    ]
    let pipe = Pipe()
    process.standardOutput = pipe
    try process.run()
    let rendered = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    process.waitUntilExit()
    #expect(process.terminationStatus == 0)
    #expect(
      rendered == page, "man/swpatch-patch.5 is not docs/patch-format.md as rendered now (run make man)")
  }

  /// `man -l` renders each page with no warning from groff.
  @Test(
    .enabled(
      if: FileManager.default.isExecutableFile(atPath: "/usr/bin/man"),
      "man is not installed (apt-get install man-db)"),
    arguments: ["man/swpatch.1", "man/swpatch-patch.5"])
  func eachPageRendersWithoutWarnings(page: String) throws {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/man")
    process.arguments = ["--warnings", "-l", Self.root + "/" + page]
    process.environment = ["MANWIDTH": "80", "PATH": "/usr/bin:/bin", "MANPAGER": "cat", "PAGER": "cat"]
    let out = Pipe()
    let err = Pipe()
    process.standardOutput = out
    process.standardError = err
    try process.run()
    let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    let warnings = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    process.waitUntilExit()
    #expect(process.terminationStatus == 0)
    #expect(text.contains("NAME"), "\(page) rendered no NAME section")
    #expect(warnings.isEmpty, "\(page): \(warnings)")
  }
}
