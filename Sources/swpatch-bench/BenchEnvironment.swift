import Foundation
import Glibc
import SwpatchProcess
import SwpatchState

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
  /// Sections to run (`--only startup,operations,peers,hot,symbols,memory,allof`; `allof-100` or
  /// `allof-1000` for one `--all-of` row); nil runs all.
  var only: Set<String>?
  /// Temporary directory for the state, control files and captured output.
  var scratch: String

  /// The registry's directory: under `scratch`, or under another root for `onTmpfs()`
  /// and `privateState(under:)`.
  var stateDirectory: String { stateRoot + "/state" }
  private var stateRoot: String

  /// Environment of every `swpatch` run.
  /// The first `swpatch` run starts the bench's own daemon on this socket and state
  /// directory; `removeState` stops it.
  var swpatchEnvironment: [String: String] {
    ["SWPATCH_STATE_DIR": stateDirectory, "SWPATCH_SOCKET": socket]
  }

  var socket: String { stateRoot + "/swpatchd.sock" }

  /// The pid of the bench's daemon, once a run has started it.
  var daemonPID: pid_t? {
    StateFile.read(StateDirectory(stateDirectory).pidFile)
      .flatMap { pid_t(String(decoding: $0, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)) }
  }

  /// Starts this environment's daemon with a `status` call and checks that it runs, so
  /// that its start (and the CLI's wait for it) is never part of a measured operation.
  /// Call it right after making an environment.
  func startDaemon() throws {
    Leftovers.shared.add(self)
    let result = swpatch(["status"])
    guard result.succeeded else { throw BenchError("cannot start the bench's daemon: \(result.failure)") }
    guard let pid = daemonPID, isOurDaemon(pid) else {
      throw BenchError("swpatch status answered, but no daemon of ours runs on \(socket)")
    }
  }

  /// Whether `pid` is a `swpatch daemon` serving this environment's socket (not a
  /// process that reused the pid of a daemon that has exited).
  func isOurDaemon(_ pid: pid_t) -> Bool {
    guard let args = TargetProcess.commandLine(of: pid) else { return false }
    let ours = (socket as NSString).standardizingPath
    return args.contains("daemon") && args.contains { ($0 as NSString).standardizingPath == ours }
  }

  /// SIGTERM to the bench's daemon and a bounded wait for it to exit (SIGKILL after
  /// 5 s: the bench's targets are its own, so a daemon killed mid-operation harms nothing
  /// that outlives the bench).
  func stopDaemon() {
    guard let pid = daemonPID, isOurDaemon(pid) else { return }
    kill(pid, SIGTERM)
    for _ in 0..<500 where isOurDaemon(pid) { usleep(10_000) }
    if isOurDaemon(pid) {
      progress("the daemon \(pid) did not stop on SIGTERM within 5 s; killing it")
      kill(pid, SIGKILL)
    }
  }

  /// The same bench with the state directory on tmpfs (/dev/shm), where fsync costs
  /// nothing: the difference shows what saving the registry adds to a stop. It gets its
  /// own daemon, which `removeState` stops.
  func onTmpfs() -> BenchEnvironment? {
    privateState(under: "/dev/shm")
  }

  /// The same bench with a state directory (and so a daemon) of its own under `parent`,
  /// for a figure that must not include what earlier sections made the main daemon do.
  func privateState(under parent: String) -> BenchEnvironment? {
    var template = Array((parent + "/swpatch-bench.XXXXXX").utf8CString)
    guard let made = mkdtemp(&template) else { return nil }
    var copy = self
    copy.stateRoot = String(cString: made)
    return copy
  }

  func runs(_ section: String) -> Bool { only?.contains(section) ?? true }

  func fixture(_ name: String) -> String { fixtures + "/" + name }

  /// Runs `swpatch ARGS` with the bench's environment, bounded by `timeout` seconds.
  func swpatch(_ args: [String], timeout: Double = 60) -> ChildResult {
    Child.run(swpatch, args, env: swpatchEnvironment, scratch: scratch, timeout: timeout)
  }

  /// Peak RSS of `swpatch ARGS`, MB, as GNU time measures it. Not our own wait4's
  /// `ru_maxrss`: a child made by posix_spawn (vfork) starts with the bench's memory
  /// map, and the kernel carries that map's high-water mark over the exec, so every
  /// child would read as large as the bench.
  func swpatchPeakRSS(_ args: [String]) -> (ChildResult, Double?) {
    guard access(Self.gnuTime, X_OK) == 0 else {
      return (
        ChildResult(
          status: 127, timedOut: false, wall: .zero, stdout: "", stderr: "/usr/bin/time not installed"), nil
      )
    }
    let file = scratch + "/rss"
    let result = Child.run(
      Self.gnuTime, ["-f", "%M", "-o", file, swpatch] + args, env: swpatchEnvironment, scratch: scratch,
      timeout: 120)
    let text = (try? String(contentsOfFile: file, encoding: .utf8)) ?? ""
    let kib = text.split(separator: "\n").last.flatMap { Double($0.trimmingCharacters(in: .whitespaces)) }
    return (result, result.succeeded ? kib.map { $0 * 1024 / 1e6 } : nil)
  }

  static let gnuTime = "/usr/bin/time"

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
      scratch: String(cString: made), stateRoot: String(cString: made))
  }

  static let usage = """
    usage: swpatch-bench --swpatch PATH --fixtures DIR [--frida-python PATH]
                         [--frida-script PATH] [--gdb PATH] [--llvm PATH] [--out FILE] [--quick]
                         [--only startup,operations,peers,hot,symbols,memory,allof,allof-100,allof-1000]
    Run it through `make bench` (docs/benchmarks.md).
    """

  /// `path` from the current directory, symbolic links kept (a venv's python is one).
  private static func absolute(_ path: String) -> String {
    path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
  }

  private static func executable(_ path: String) -> String? {
    access(path, X_OK) == 0 ? path : nil
  }

  /// Stops the daemon and removes the temporary directories. The state goes first:
  /// the daemon's pid file is in it (and, for the main environment, it is `scratch`).
  func cleanUp() {
    removeState()
    try? FileManager.default.removeItem(atPath: scratch)
  }

  /// Stops the daemon and removes the state directory (all of its root, for a copy).
  func removeState() {
    stopDaemon()
    Leftovers.shared.remove(self)
    try? FileManager.default.removeItem(atPath: stateRoot)
  }
}
