import Foundation
import Glibc

/// Where the bench finds its tools and fixtures, and the one place that decides the
/// environment every `swpatch` run gets: a temporary state directory, so the bench never
/// touches /var/lib/swpatch (and, once the CLI is a daemon client, the daemon's socket).
struct BenchEnvironment {
  var swpatch: String
  var fixtures: String
  var fridaPython: String?
  var fridaScript: String
  var gdb: String?
  var llvm: String?
  var output: String
  var quick: Bool
  /// Sections to run (`--only operations,peers,symbols,memory`); nil runs all.
  var only: Set<String>?
  /// Temporary directory for the state, control files and captured output.
  var scratch: String

  /// Environment of every `swpatch` run.
  var swpatchEnvironment: [String: String] {
    // When swpatchd lands: add "SWPATCH_SOCKET": scratch + "/swpatchd.sock" here, and
    // start the daemon on the same state directory before the first run.
    ["SWPATCH_STATE_DIR": scratch + "/state"]
  }

  func runs(_ section: String) -> Bool { only?.contains(section) ?? true }

  func fixture(_ name: String) -> String { fixtures + "/" + name }

  /// Runs `swpatch ARGS` with the bench's environment, bounded by `timeout` seconds.
  func swpatch(_ args: [String], timeout: Double = 60) -> ChildResult {
    Child.run(swpatch, args, env: swpatchEnvironment, scratch: scratch, timeout: timeout)
  }

  /// Parses `--swpatch PATH --fixtures DIR [--frida-python PATH]
  /// [--frida-script PATH] [--gdb PATH] [--llvm PATH] [--out FILE] [--quick]
  /// [--only SECTION,...]`.
  static func fromArguments(_ arguments: [String]) throws -> BenchEnvironment {
    var values: [String: String] = [:]
    var quick = false
    var i = 1
    while i < arguments.count {
      let key = arguments[i]
      if key == "--quick" {
        quick = true
      } else if key == "--help" || key == "-h" {
        throw BenchError(usage)
      } else {
        guard key.hasPrefix("--"), i + 1 < arguments.count else { throw BenchError(usage) }
        values[String(key.dropFirst(2))] = arguments[i + 1]
        i += 1
      }
      i += 1
    }
    guard let swpatch = values["swpatch"], let fixtures = values["fixtures"] else {
      throw BenchError(usage)
    }
    var template = Array((NSTemporaryDirectory() + "/swpatch-bench.XXXXXX").utf8CString)
    guard let made = mkdtemp(&template) else { throw BenchError("cannot make a temporary directory") }
    // Absolute paths: a target resolves a relative library path against its own
    // directory, and Frida's Module.load of a relative path crashed the target here.
    return BenchEnvironment(
      swpatch: absolute(swpatch), fixtures: absolute(fixtures),
      fridaPython: values["frida-python"].map(absolute).flatMap(executable),
      fridaScript: absolute(values["frida-script"] ?? "bench/frida-patch.py"),
      gdb: executable(values["gdb"] ?? "/usr/bin/gdb"),
      llvm: values["llvm"] ?? "/usr/lib/x86_64-linux-gnu/libLLVM-15.so.1",
      output: values["out"] ?? "bench/results.json", quick: quick,
      only: values["only"].map { Set($0.split(separator: ",").map(String.init)) },
      scratch: String(cString: made))
  }

  static let usage = """
    usage: swpatch-bench --swpatch PATH --fixtures DIR [--frida-python PATH]
                         [--frida-script PATH] [--gdb PATH] [--llvm PATH] [--out FILE] [--quick]
                         [--only operations,peers,symbols,memory]
    Run it through `make bench` (docs/benchmarks.md).
    """

  /// `path` from the current directory, symbolic links kept (a venv's python is one).
  private static func absolute(_ path: String) -> String {
    path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
  }

  private static func executable(_ path: String) -> String? {
    access(path, X_OK) == 0 ? path : nil
  }

  /// Removes the temporary directory.
  func cleanUp() {
    try? FileManager.default.removeItem(atPath: scratch)
  }
}
