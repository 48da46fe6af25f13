import Foundation

/// Issue 16: how long the client takes from spawn to exit, beside the cheapest process
/// there is (/bin/true) and a Python interpreter's start, timed in the same run and
/// interleaved, so that the machine's load weighs on all of them alike.
struct StartupBench {
  static let section = "client start-up (wall from spawn to exit; daemon running)"
  static let status = "swpatch status"
  static let python = "/usr/bin/python3 -c pass"
  static let truth = "/bin/true"
  let env: BenchEnvironment
  let report: Report

  func run() {
    let reps = env.quick ? 20 : 50
    progress("start-up: \(reps) runs of each command")
    // Debian's python3, not a pyenv shim on PATH: the interpreter a user has.
    let commands: [(name: String, path: String, args: [String])] = [
      (Self.status, env.swpatch, ["status"]),
      ("swpatch --help", env.swpatch, ["--help"]),
      (Self.python, "/usr/bin/python3", ["-c", "pass"]),
      (Self.truth, "/bin/true", []),
    ]
    var walls: [String: [Double]] = [:]
    var failures: [String: String] = [:]
    for _ in 0..<reps {
      for command in commands where failures[command.name] == nil {
        let result = Child.run(
          command.path, command.args, env: env.swpatchEnvironment, scratch: env.scratch, timeout: 10)
        if result.succeeded {
          walls[command.name, default: []].append(result.wall.seconds * 1000)
        } else {
          failures[command.name] = result.failure
        }
      }
    }
    for command in commands {
      let values = failures[command.name] == nil ? walls[command.name] ?? [] : []
      if values.isEmpty {
        report.missing(Self.section, command.name, .ms, because: failures[command.name] ?? "not run")
      } else {
        report.add(Self.section, command.name, .ms, values)
      }
    }
  }
}
