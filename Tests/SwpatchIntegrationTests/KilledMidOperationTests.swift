import Foundation
import Glibc
import Testing

/// SIGKILL of the process doing the ptrace work, at a random instant of an operation,
/// never hurts the target: it keeps running, untraced, and every result it computes
/// afterwards is the old version or the new one.
@Suite(.serialized, .needsRoot, .needsFixtures) struct KilledMidOperationTests {
  /// compute(21) before (42) and after (84) libslow's compute_slow, whose library's
  /// constructor sleeps 150 ms so that many kills land inside the remote dlopen.
  static let legitimate: Set<String> = ["42", "84"]

  static func patch(_ ws: Workspace) -> String {
    ws.patchFile("slow", library: "libslow.so", functions: [("compute", "compute_slow")])
  }

  @Test func killedAttachLeavesTheTargetRunningInTheOldOrNewState() throws {
    let ws = Workspace()
    let full = try Self.timeOneAttach(ws)
    var generator = SystemRandomNumberGenerator()
    for round in 0..<40 {
      let target = try Fixture("loop", ["10"])
      #expect(target.waitForValue("compute", "42"))
      let operation = try OperationUnderTest(
        ws, "attach", "\(target.pid)", Self.patch(ws), "--allow-constructors")
      operation.kill(after: .microseconds(Int64.random(in: 0..<full.microseconds, using: &generator)))
      try Self.expectUnharmed(target, round: round)
      try Self.expectStatusAgrees(target, ws, patch: "slow", round: round)
    }
  }

  @Test func killedDisableLeavesTheTargetRunningInTheOldOrNewState() throws {
    let ws = Workspace()
    var generator = SystemRandomNumberGenerator()
    for round in 0..<16 {
      let target = try Fixture("loop", ["10"])
      #expect(target.waitForValue("compute", "42"))
      let attach = ws.swpatch("attach", "\(target.pid)", Self.patch(ws), "--allow-constructors")
      #expect(attach.status == 0, "\(attach.output)")
      let start = ContinuousClock.now
      let disable = ws.swpatch("disable", "\(target.pid)", "slow")
      #expect(disable.status == 0, "\(disable.output)")
      let full = ContinuousClock.now - start
      let enable = ws.swpatch("enable", "\(target.pid)", "slow")
      #expect(enable.status == 0, "\(enable.output)")
      let operation = try OperationUnderTest(ws, "disable", "\(target.pid)", "slow")
      operation.kill(after: .microseconds(Int64.random(in: 0..<full.microseconds, using: &generator)))
      try Self.expectUnharmed(target, round: round)
      try Self.expectStatusAgrees(target, ws, patch: "slow", round: round)
    }
  }

  /// How long one whole attach takes here, from start to exit.
  static func timeOneAttach(_ ws: Workspace) throws -> Duration {
    let target = try Fixture("loop", ["10"])
    #expect(target.waitForValue("compute", "42"))
    let start = ContinuousClock.now
    let result = ws.swpatch("attach", "\(target.pid)", patch(ws), "--allow-constructors")
    #expect(result.status == 0, "\(result.output)")
    #expect(target.waitForValue("compute", "84"))
    return ContinuousClock.now - start
  }

  /// The target is alive and untraced, prints more lines, and each compute= it prints
  /// from now on is a legitimate version, settling on one.
  static func expectUnharmed(
    _ target: Fixture, round: Int, sourceLocation: SourceLocation = #_sourceLocation
  ) throws {
    let mark = target.output.count
    #expect(
      target.keepsRunning(lines: 5), "round \(round): the target stopped", sourceLocation: sourceLocation)
    #expect(target.isAlive, "round \(round): the target died", sourceLocation: sourceLocation)
    #expect(everyThreadIsUntraced(target.pid), "round \(round)", sourceLocation: sourceLocation)
    let values = target.output.all.dropFirst(mark).compactMap { line -> String? in
      line.split(separator: " ").first { $0.hasPrefix("compute=") }.map { String($0.dropFirst(8)) }
    }
    #expect(!values.isEmpty, sourceLocation: sourceLocation)
    for value in values {
      #expect(legitimate.contains(value), "round \(round): compute=\(value)", sourceLocation: sourceLocation)
    }
  }

  /// `status` (from a daemon started afresh, which first puts back the bytes of an
  /// operation its predecessor did not finish) says what the target runs.
  static func expectStatusAgrees(
    _ target: Fixture, _ ws: Workspace, patch: String, round: Int,
    sourceLocation: SourceLocation = #_sourceLocation
  ) throws {
    let status = ws.swpatch("status", "\(target.pid)", "--json")
    #expect(
      status.status == 0, "\(status.output)\ndaemon log (end): \(ws.daemonLog.suffix(3000))",
      sourceLocation: sourceLocation)
    let entry = (status.json?["targets"] as? [[String: Any]])?.first
    let state = (entry?["patches"] as? [[String: Any]])?.first { $0["id"] as? String == patch }?["state"]
    // No entry: the operation was never recorded, so there are no hooks to check. An
    // entry without its 'hooks' key is a broken status, not an empty one.
    let hooks =
      entry == nil
      ? []
      : try #require(
        entry?["hooks"] as? [[String: Any]], "status lost its 'hooks' key", sourceLocation: sourceLocation)
    #expect(
      hooks.allSatisfy { $0["drift"] == nil }, "round \(round): \(hooks)", sourceLocation: sourceLocation)
    let expected = state as? String == "enabled" ? "84" : "42"
    #expect(
      target.waitForValue("compute", expected, from: target.output.count),
      "round \(round): status says \(state ?? "not patched") but the target does not print compute=\(expected)",
      sourceLocation: sourceLocation)
  }
}

/// One swpatch operation started in the background, to be killed.
final class OperationUnderTest {
  let cli: pid_t
  let workspace: Workspace
  private let output: Int32

  /// The daemon doing the ptrace work, running before the operation starts.
  let worker: pid_t

  init(_ workspace: Workspace, _ args: String...) throws {
    self.workspace = workspace
    worker = try ptraceWorker(workspace)
    (cli, output) = try spawn(
      Paths.swpatch, args, env: ["SWPATCH_STATE_DIR": workspace.stateDir, "SWPATCH_SOCKET": workspace.socket])
  }

  private var reaped = false

  /// Sleeps `delay`, SIGKILLs the ptrace worker, and reaps the CLI.
  func kill(after delay: Duration) {
    usleep(UInt32(delay.microseconds))
    Glibc.kill(worker, SIGKILL)
    for _ in 0..<500 where processExists(worker) { usleep(10_000) }
    drain(output) { _ in }
    var status: Int32 = 0
    waitpid(cli, &status, 0)
    reaped = true
  }

  deinit {
    // A reaped pid is no longer ours to signal.
    guard !reaped else { return }
    Glibc.kill(cli, SIGKILL)
    var status: Int32 = 0
    waitpid(cli, &status, WNOHANG)
  }
}

/// The process that issues the ptrace requests of an operation: the workspace's
/// daemon, started (by a `status`) if it is not running, so that its pid is known
/// before the operation begins.
func ptraceWorker(_ workspace: Workspace) throws -> pid_t {
  if let pid = workspace.daemonPID, processExists(pid) { return pid }
  #expect(workspace.swpatch("status").status == 0)
  return try #require(workspace.daemonPID)
}
