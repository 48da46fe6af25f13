import Dispatch
import FoundationEssentials
import Glibc
import SwpatchBase
import SwpatchPatcher
import SwpatchProcess
import SwpatchProtocol
import SwpatchRegistry

/// A service is many processes of one file: `--all-of PATH` changes each of them, one
/// all-or-nothing operation per process, and the rules it records patch new ones as
/// they appear (docs/services.md).
extension DaemonService {
  // MARK: --all-of

  /// Runs `request` on every process of `request.allOf` (on the worker queue), each
  /// one audited like a request of its own, and records, enables or disables the rule.
  func changeAll(_ request: Request, caller: PeerCredentials) -> Data {
    let path = request.allOf!
    do {
      guard !isStopping else {
        throw ErrorBody(code: "shutting_down", message: "the daemon is shutting down; retry in a moment")
      }
      let program = try ProgramFile.open(path)
      let options = request.options ?? OperationOptions()
      var patchID = request.patchID ?? ""
      var pins: [String: String] = [:]
      if request.op == .attach {
        let patchPath = request.patchPath!
        let file = try PatchFile.parse(
          Data(request.patch!.utf8), path: patchPath,
          folder: PathText.deletingLastComponent(patchPath))
        patchID = file.id
        pins = file.buildIDs
      }
      var ruleState: String?
      var notes: [String] = []
      let existing = rules.rule(path: path, patchID: patchID)
      // A rule is switched off before its processes are, so that the rule scan does not
      // patch a new process behind the operation's back.
      if request.op == .disable, existing != nil, !options.dryRun {
        if try rules.setEnabled(path: path, patchID: patchID, false) { ruleState = "disabled" }
      }
      // Processes that start from here on are the rule's to patch.
      let horizon = ProcessScan.horizon()
      let pids = request.ruleOnly == true ? [] : program.processes(pins: pins)
      var outcomes: [ProcessOutcome] = []
      for pid in pids {
        var one = request
        one.pid = pid
        one.allOf = nil
        one.ruleOnly = nil
        var result = changeOne(one, caller: caller, note: "--all-of \(path)")
        // `enable --all-of` also patches the processes that started while the rule
        // was off, from the rule's own patch.
        if request.op == .enable, case .failure(let body) = result,
          ["not_patched", "unknown_patch"].contains(body.code), let existing, !options.dryRun
        {
          result = changeOne(
            ruleRequest(existing, pid: pid, options: options), caller: caller, note: "--all-of \(path)")
        }
        outcomes.append(Self.outcome(pid, result, operation: request.op))
      }
      if pids.isEmpty && request.ruleOnly != true {
        notes.append("no process runs or maps \(path)")
      }
      if !options.dryRun {
        switch request.op {
        case .attach:
          let worked = outcomes.contains { $0.result == .patched || $0.result == .already }
          if request.ruleOnly == true || worked {
            try rules.record(
              Rule(
                path: path, patchID: patchID, patch: request.patch!, patchPath: request.patchPath!,
                policy: request.policy, options: options, enabled: true,
                created: AuditRecord.timestamp(Date()), uid: caller.uid, gid: caller.gid,
                horizon: horizon))
            ruleWatch?.reset()
            ruleState = "recorded"
          } else {
            notes.append(
              pids.isEmpty
                ? "no rule was recorded (add --rule-only to record one for new processes anyway)"
                : "no process could be patched, so no rule was recorded")
          }
        case .enable:
          if existing != nil, try rules.setEnabled(path: path, patchID: patchID, true, horizon: horizon) {
            ruleWatch?.reset()
            ruleState = "enabled"
          }
        case .remove:
          // A disabled rule would only come back with `enable --all-of`, which the
          // patch, now gone from its processes, can no longer serve; an enabled one
          // still patches new processes and is left to the operator.
          if let existing {
            if existing.enabled {
              notes.append(
                "the rule for \(path) still patches new processes with '\(patchID)'; `swpatch disable --all-of` it first to forget it"
              )
            } else if try rules.remove(path: path, patchID: patchID) {
              ruleState = "removed"
            }
          }
        default:
          break
        }
      }
      let report = AllOfReport(
        operation: request.op.rawValue, path: path, patch: patchID, dryRun: options.dryRun,
        processes: outcomes, rule: ruleState, notes: notes)
      return WireCoding.line(Response.success(report))
    } catch {
      return WireCoding.line(Response<NoResult>.failure(Self.errorBody(error)))
    }
  }

  /// Where one process's result falls in the summary.
  static func outcome(
    _ pid: Int32, _ result: Result<OperationReport, ErrorBody>, operation: RequestOp
  ) -> ProcessOutcome {
    switch result {
    case .success(let report):
      return ProcessOutcome(pid: pid, result: .patched, stoppedUs: report.stoppedMicroseconds)
    case .failure(let body):
      let already = ["attach": "already_applied", "enable": "already_enabled", "disable": "already_disabled"]
      let skip: Set<String> = [
        "not_patched", "unknown_patch", "process_exited", "no_such_process", "permission_denied",
        "own_process", "kernel_thread", "build_id_mismatch", "object_not_loaded",
      ]
      let kind: ProcessOutcome.Result =
        body.code == already[operation.rawValue] ? .already : skip.contains(body.code) ? .skipped : .failed
      return ProcessOutcome(pid: pid, result: kind, code: body.code, message: body.message)
    }
  }

  /// The attach request a rule makes for `pid`.
  func ruleRequest(_ rule: Rule, pid: Int32, options: OperationOptions? = nil) -> Request {
    var options = options ?? rule.options
    options.dryRun = false
    return Request(
      op: .attach, pid: pid, patch: rule.patch, patchPath: rule.patchPath, policy: rule.policy,
      options: options)
  }

  // MARK: Rules for new processes

  /// Starts the scan that applies rules to new processes (`RuleWatch`).
  func watchRules() {
    ruleWatch = RuleWatch(rules: rules) { [weak self] pid, rule in self?.apply(rule, to: pid) }
  }

  /// Patches a new process a rule covers, on the worker queue like any request. A patch
  /// that does not load there is recorded in the audit log and the rule's status, and
  /// the process runs on untouched.
  private func apply(_ rule: Rule, to pid: Int32) {
    worker.async { [self] in
      // The rule may have been disabled while this waited.
      guard !isStopping, let current = rules.rule(path: rule.path, patchID: rule.patchID), current.enabled
      else { return }
      let caller = PeerCredentials(pid: 0, uid: current.uid, gid: current.gid)
      let result = changeOne(
        ruleRequest(current, pid: pid), caller: caller, note: "rule for new processes of \(current.path)",
        quiet: ["already_applied", "process_exited", "no_such_process"])
      switch Self.outcome(pid, result, operation: .attach).result {
      case .patched:
        rules.noteApplied(current)
      case .failed, .skipped:
        if case .failure(let body) = result, !["process_exited", "no_such_process"].contains(body.code) {
          rules.noteFailure(
            current, ProcessOutcome(pid: pid, result: .failed, code: body.code, message: body.message))
        }
      case .already:
        break
      }
    }
  }
}

/// Finds new processes of the files rules name: every 50 ms it lists /proc and looks at
/// each process it has not seen, or whose executable changed (`execve`), once it has
/// run for `minimumAgeMilliseconds` (so the dynamic loader has mapped and relocated its
/// libraries before anything is loaded into it). Why a scan and not the kernel's proc
/// connector: docs/design.md, "Rules for new processes".
final class RuleWatch: @unchecked Sendable {
  static let interval = DispatchTimeInterval.milliseconds(50)
  static let minimumAgeMilliseconds = 30.0

  private let rules: RuleBook
  private let onNew: @Sendable (Int32, Rule) -> Void
  private let lock = Lock()
  /// Each process looked at, with the identity of its executable then (nil: none).
  private var seen: [Int32: FileIdentity?] = [:]
  private var timer: (any DispatchSourceTimer)?

  init(rules: RuleBook, onNew: @escaping @Sendable (Int32, Rule) -> Void) {
    self.rules = rules
    self.onNew = onNew
    let timer = DispatchSource.makeTimerSource(queue: DispatchQueue(label: "swpatchd.rule-watch"))
    timer.schedule(deadline: .now(), repeating: Self.interval)
    timer.setEventHandler { [weak self] in self?.tick() }
    timer.resume()
    self.timer = timer
  }

  /// Looks at every process again at the next tick (a rule was recorded or enabled).
  func reset() { lock.withLock { seen = [:] } }

  /// Looks at `pid` again at the next tick (it ran `execve`).
  func forget(_ pid: Int32) { _ = lock.withLock { seen.removeValue(forKey: pid) } }

  private func tick() {
    let active = rules.enabled
    guard !active.isEmpty else { return reset() }
    let pids = ProcessScan.processIDs()
    var fresh: [(pid: Int32, execed: Bool)] = []
    lock.withLock {
      var next: [Int32: FileIdentity?] = [:]
      for pid in pids {
        let identity = ProcessScan.executableIdentity(of: pid)
        if let before = seen[pid], before == identity {
          next.updateValue(before, forKey: pid)
          continue
        }
        // Too young: its loader may still be at work. Looked at again next tick.
        guard let age = ProcessScan.ageMilliseconds(of: pid), age >= Self.minimumAgeMilliseconds else {
          if let before = seen[pid] { next.updateValue(before, forKey: pid) }
          continue
        }
        let execed = seen[pid] != nil
        next.updateValue(identity, forKey: pid)
        fresh.append((pid, execed))
      }
      seen = next
    }
    guard !fresh.isEmpty else { return }
    let boot = ProcessScan.bootID
    let programs = active.compactMap { rule -> (Rule, ProgramFile, [String: String])? in
      guard let identity = FileIdentity.of(path: rule.path) else { return nil }
      let pins = (try? JSONDecoder().decode(BuildIDPins.self, from: Data(rule.patch.utf8)))?.buildIDs
      return (
        rule, ProgramFile(path: rule.path, identity: identity, buildID: nil), pins ?? [:]
      )
    }
    for (pid, execed) in fresh {
      guard let start = try? TargetProcess.inspect(pid).startTime else { continue }
      for (rule, program, pins) in programs
      where (execed || rule.isNew(pid: pid, startTime: start, bootID: boot))
        && program.matches(pid, pins: pins)
      {
        onNew(pid, rule)
      }
    }
  }
}

/// The `build_ids` of a rule's patch text; nil when absent or not an object of strings.
private struct BuildIDPins: Decodable {
  let buildIDs: [String: String]?

  enum CodingKeys: String, CodingKey { case buildIDs = "build_ids" }
}
