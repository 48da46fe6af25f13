import Foundation
import Glibc
import Testing

/// Issue 14's kill test: the daemon SIGKILLed at a random instant of 40 operations
/// (disable and enable in turn) on `hot 2 slow`, whose two workers are inside the
/// patched functions all the time, in calls of 20 ms: every operation is a per-thread
/// transition that waits about that long, so many kills land while one is under way. After each: the target is alive, untraced, every
/// worker makes progress, no call chain ever mixed versions (the fixture checks every
/// call), and `status` from a daemon started afresh (which finishes or undoes what its
/// predecessor left) says the version the workers run.
@Suite(.serialized, .needsRoot, .needsFixtures) struct KilledTransitionTests {
  static let rounds = 40

  @Test func killedDuringHotOperationsLeavesTheTargetRunningAndStatusTrue() throws {
    let ws = Workspace()
    let target = try Fixture("hot", ["2", "slow"])
    let patch = ws.patchFile(
      "hot", library: "libhot.so", functions: [("compute", "compute_v2"), ("helper", "helper_v2")])
    _ = try HotFunctionTests.counts(target, from: 1)
    #expect(ws.swpatch("attach", "\(target.pid)", patch).status == 0)
    // How long each operation takes here, from the request reaching the daemon's
    // socket to its answer, and how long its transition (which ends just before the
    // answer), so that kills land before, during and just after its writes, half of
    // them in the transition's stretch. Requests go to the socket directly: a kill
    // before a CLI had connected would only make it start a daemon of its own.
    var took: [String: (whole: Int64, transition: Int64)] = [:]
    for verb in ["disable", "enable"] {
      let start = ContinuousClock.now
      let answer = rawExchange(ws, line(Self.request(verb, target.pid)), timeout: 30)
      let whole = (ContinuousClock.now - start).microseconds
      #expect(answer.contains(#""ok":true"#), "\(answer)")
      let report = (try? JSONSerialization.jsonObject(with: Data(answer.utf8))) as? [String: Any]
      let transition = (report?["result"] as? [String: Any])?["transition_us"] as? Int ?? 0
      took[verb] = (whole, Int64(transition))
    }
    var generator = SystemRandomNumberGenerator()
    for round in 0..<Self.rounds {
      let state = try Self.patchState(ws, target)
      let verb = state == "enabled" ? "disable" : "enable"
      let (whole, transition) = took[verb]!
      // A third of the kills at any instant of the operation (or just after it), a
      // third within 10 ms of its journal appearing (its first stop), a third within
      // the transition's length of the journal recording a transition under way.
      let moment: KillMoment =
        switch round % 3 {
        case 0: .afterRequest(Int64.random(in: 0..<(whole + whole / 4), using: &generator))
        case 1: .afterJournal(Int64.random(in: 0..<10_000, using: &generator))
        default: .afterTransitionBegins(Int64.random(in: 0..<max(1, transition), using: &generator))
        }
      let daemon = try ptraceWorker(ws)
      let sent = DispatchSemaphore(value: 0)
      let answered = DispatchSemaphore(value: 0)
      let request = line(Self.request(verb, target.pid))
      DispatchQueue.global().async {
        sent.signal()
        _ = rawExchange(ws, request, timeout: 30)
        answered.signal()
      }
      sent.wait()
      let start = ContinuousClock.now
      switch moment {
      case .afterRequest(let delay):
        usleep(UInt32(delay))
      case .afterJournal(let delay):
        Self.waitForJournal(ws, containing: nil, until: start + .seconds(10))
        usleep(UInt32(delay))
      case .afterTransitionBegins(let delay):
        Self.waitForJournal(ws, containing: "transition", until: start + .seconds(10))
        usleep(UInt32(delay))
      }
      kill(daemon, SIGKILL)
      for _ in 0..<500 where processExists(daemon) { usleep(10_000) }
      answered.wait()
      try Self.expectUnharmed(target, round: round)
      try Self.expectStatusAgrees(ws, target, round: round)
    }
    let end = try HotFunctionTests.counts(target, from: target.output.count)
    #expect(end["mixed"] == 0, "a call chain ran two versions: \(end)")
    // The new daemon found a transition under way, and finished it, in some rounds.
    let audit = (try? String(contentsOfFile: ws.stateDir + "/audit.log", encoding: .utf8)) ?? ""
    let finished = audit.split(separator: "\n").filter { $0.contains("finished a transition") }.count
    let recovered = audit.split(separator: "\n").filter { $0.contains(#""recover""#) }
    #expect(recovered.count >= Self.rounds / 3, "too few kills landed inside an operation: \(recovered)")
    #expect(
      finished >= Self.rounds / 6,
      "kills inside a transition: \(finished) of \(Self.rounds); recoveries: \(recovered)")
  }

  enum KillMoment {
    case afterRequest(Int64)
    case afterJournal(Int64)
    case afterTransitionBegins(Int64)
  }

  /// Polls the state directory until an operation's undo journal exists (and holds
  /// `text`), or `deadline`.
  static func waitForJournal(
    _ ws: Workspace, containing text: String?, until deadline: ContinuousClock.Instant
  ) {
    let folder = ws.stateDir + "/journal"
    while ContinuousClock.now < deadline {
      for name in (try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? [] {
        guard let text else { return }
        if let data = FileManager.default.contents(atPath: folder + "/" + name),
          String(decoding: data, as: UTF8.self).contains(text)
        {
          return
        }
      }
      usleep(200)
    }
  }

  static func request(_ verb: String, _ pid: pid_t) -> String {
    #"{"v":1,"op":"\#(verb)","pid":\#(pid),"patch_id":"hot"}"#
  }

  /// The patch's state in `status` (from a daemon started now: it finishes or undoes
  /// an operation its predecessor left).
  static func patchState(_ ws: Workspace, _ target: Fixture) throws -> String? {
    let status = ws.swpatch("status", "\(target.pid)", "--json")
    try #require(status.status == 0, "\(status.output)\ndaemon log (end): \(ws.daemonLog.suffix(3000))")
    let entry = (status.json?["targets"] as? [[String: Any]])?.first
    return (entry?["patches"] as? [[String: Any]])?.first { $0["id"] as? String == "hot" }?["state"]
      as? String
  }

  /// Alive, untraced, and each worker made calls in each of three lines after the kill.
  static func expectUnharmed(
    _ target: Fixture, round: Int, sourceLocation: SourceLocation = #_sourceLocation
  ) throws {
    #expect(target.isAlive, "round \(round): the target died", sourceLocation: sourceLocation)
    var from = target.output.count
    for _ in 0..<3 {
      let line = try #require(
        target.output.wait(from: from) { $0.hasPrefix("calls=") },
        "round \(round): the target stopped printing",
        sourceLocation: sourceLocation)
      from = line.0 + 1
      let fields = HotFunctionTests.fields(line.1)
      #expect(
        (fields["progress"] ?? 0) > 0, "round \(round): a worker is stuck: \(line.1)",
        sourceLocation: sourceLocation)
      #expect(fields["mixed"] == 0, "round \(round): \(line.1)", sourceLocation: sourceLocation)
    }
    // Checked once the workers have run on: a thread the dead tracer held shows state
    // `t` until the scheduler has run it after the kernel detached it (seen at load 10).
    #expect(everyThreadIsUntraced(target.pid), "round \(round)", sourceLocation: sourceLocation)
  }

  /// What `status` says runs is what the workers answer with: once the new daemon has
  /// recovered, two lines in a row in which only that version's count grew.
  static func expectStatusAgrees(
    _ ws: Workspace, _ target: Fixture, round: Int, sourceLocation: SourceLocation = #_sourceLocation
  ) throws {
    let state = try patchState(ws, target)
    let runs = state == "enabled" ? "v2" : "v1"
    let other = runs == "v2" ? "v1" : "v2"
    var from = target.output.count
    var previous: [String: Int]? = nil
    var agreeing = 0
    for _ in 0..<20 where agreeing < 2 {
      guard let line = target.output.wait(from: from, { $0.hasPrefix("calls=") }) else { break }
      from = line.0 + 1
      let fields = HotFunctionTests.fields(line.1)
      if let previous, fields[other] == previous[other], (fields[runs] ?? 0) > (previous[runs] ?? 0) {
        agreeing += 1
      } else if previous != nil {
        agreeing = 0
      }
      previous = fields
    }
    #expect(
      agreeing >= 2,
      "round \(round): status says \(state ?? "not patched") but the workers do not run \(runs)",
      sourceLocation: sourceLocation)
  }
}
