import Foundation
import Glibc
import Testing

/// Issue 14: under the default `--consistency stack`, a function that worker threads are
/// (by the fixture's own sampling) inside at least 90 % of the time is attached,
/// disabled and enabled every time, 50 times each, at 1, 2 and 16 threads. The fixture
/// checks the transition's guarantee from inside: each call of compute (which calls
/// helper, both replaced by every patch) must get both answers from one version, and no
/// thread may change versions more often than operations happened.
@Suite(.serialized, .needsRoot, .needsFixtures) struct HotFunctionTests {
  static let repetitions = 50

  /// The fields of the fixture's last status line after `from`.
  static func counts(_ target: Fixture, from: Int) throws -> [String: Int] {
    let line = try #require(target.output.wait(from: from) { $0.hasPrefix("calls=") })
    return fields(line.1)
  }

  /// The numeric fields of one status line of the fixture.
  static func fields(_ line: String) -> [String: Int] {
    Dictionary(
      uniqueKeysWithValues: line.split(separator: " ").compactMap { field in
        let parts = field.split(separator: "=")
        return parts.count == 2 ? Int(parts[1]).map { (String(parts[0]), $0) } : nil
      })
  }

  @Test(arguments: [1, 2, 16])
  func stackConsistencyPatchesAFunctionThreadsAreAlwaysInside(threads: Int) throws {
    let ws = Workspace()
    let target = try Fixture("hot", ["\(threads)"])
    let start = try Self.counts(target, from: 1)
    // The fixture's own sampling, over its first half second (the best 100 ms: a
    // machine busy with other work takes CPU from the workers, not time in compute).
    var inside = start["inside"] ?? 0
    for n in 2...5 { inside = max(inside, try Self.counts(target, from: n)["inside"] ?? 0) }
    #expect(inside >= 90, "the workers are not inside compute 90 % of the time: \(inside) %")

    #expect(ws.swpatch("status").status == 0)  // starts the workspace's daemon
    // Patches alternate between two versions, so every operation changes what runs.
    var requests: [String] = []
    for i in 0..<Self.repetitions {
      let library = i % 2 == 0 ? "libhot.so" : "libhot3.so"
      let version = i % 2 == 0 ? "v2" : "v3"
      let patch =
        #"{"id":"hot-\#(i)","library":"\#(Paths.fixture(library))","functions":[{"old":"compute","new":"compute_\#(version)"},{"old":"helper","new":"helper_\#(version)"}]}"#
      let escaped = patch.replacingOccurrences(of: "\"", with: "\\\"")
      requests.append(
        #"{"v":1,"op":"attach","pid":\#(target.pid),"patch":"\#(escaped)","patch_path":"\#(ws.directory)/hot-\#(i).json","options":{}}"#
      )
    }
    for i in (0..<Self.repetitions).reversed() {
      requests.append(#"{"v":1,"op":"disable","pid":\#(target.pid),"patch_id":"hot-\#(i)"}"#)
    }
    for i in 0..<Self.repetitions {
      requests.append(#"{"v":1,"op":"enable","pid":\#(target.pid),"patch_id":"hot-\#(i)"}"#)
    }
    let answers = rawExchange(ws, requests.flatMap { line($0) }, timeout: 300).split(separator: "\n")
    #expect(answers.count == requests.count)
    let failed = answers.filter { !$0.contains(#""ok":true"#) }
    #expect(
      failed.isEmpty,
      "\(failed.count) of \(answers.count) failed, first: \(failed.first ?? ""); the target \(target.isAlive ? "runs" : target.ending ?? "is gone"); daemon log (end): \(ws.daemonLog.suffix(2000))"
    )
    let reports = answers.compactMap {
      ((try? JSONSerialization.jsonObject(with: Data($0.utf8))) as? [String: Any])?["result"]
        as? [String: Any]
    }
    #expect(reports.count == requests.count)
    // Threads inside were caught on return instead of waited for. (A retry remains
    // possible when a stop finds a thread whose stack cannot be read, such as one
    // passing through a trampoline slot: it is resumed and looked at again.)
    let caught = reports.map { $0["threads_caught"] as? Int ?? 0 }
    let retries = reports.map { $0["retries"] as? Int ?? -1 }
    #expect(caught.filter { $0 > 0 }.count >= Self.repetitions, "threads caught per operation: \(caught)")
    #expect(retries.filter { $0 > 0 }.count <= requests.count / 10, "retries per operation: \(retries)")

    let end = try Self.counts(target, from: target.output.count)
    #expect(end["mixed"] == 0, "a call chain ran two versions: \(end)")
    #expect(
      (end["flips"] ?? .max) <= requests.count,
      "a thread changed versions more than once per operation: \(end)")
    #expect((end["v2"] ?? 0) > 0 && (end["v1"] ?? 0) > (start["v1"] ?? 0), "\(end)")
    #expect(target.isAlive)
  }
}
