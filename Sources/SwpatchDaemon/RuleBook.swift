import FoundationEssentials
import Glibc
import SwpatchBase
import SwpatchProcess
import SwpatchProtocol
import SwpatchRegistry
import SwpatchState

/// A rule `attach --all-of` records: while enabled, every new process of `path` gets
/// the patch. It keeps the patch file's text (the daemon never opens a patch file on a
/// client's behalf) and who recorded it (it patches only what that uid may change).
struct Rule: Codable, Sendable, Equatable {
  var path: String
  var patchID: String
  var patch: String
  var patchPath: String
  var policy: DisablePolicy?
  var options: OperationOptions
  var enabled: Bool
  var created: String
  var uid: UInt32
  var gid: UInt32
  /// Processes that started (start time, in clock ticks since boot `bootID`) after
  /// this are new to the rule; those before were there when it was recorded or
  /// enabled, and `--all-of` itself dealt with them (or, with `--rule-only`, was told
  /// to leave them).
  var since: UInt64
  var bootID: String
  /// The processes that started in the tick `since` itself but before the rule: a tick
  /// is 10 ms, and a process that starts right after the rule often starts in the same
  /// one. Nil in rules recorded before it was kept: such a tick's processes are old.
  var sinceTickPIDs: [Int32]?

  init(
    path: String, patchID: String, patch: String, patchPath: String, policy: DisablePolicy?,
    options: OperationOptions, enabled: Bool, created: String, uid: UInt32, gid: UInt32,
    horizon: ProcessScan.Horizon
  ) {
    self.path = path
    self.patchID = patchID
    self.patch = patch
    self.patchPath = patchPath
    self.policy = policy
    self.options = options
    self.enabled = enabled
    self.created = created
    self.uid = uid
    self.gid = gid
    since = horizon.ticks
    bootID = horizon.bootID
    sinceTickPIDs = horizon.startedInTick
  }

  var key: String { path + "\u{0}" + patchID }

  enum CodingKeys: String, CodingKey {
    case path, patch, policy, options, enabled, created, uid, gid, since
    case patchID = "patch_id"
    case patchPath = "patch_path"
    case bootID = "boot_id"
    case sinceTickPIDs = "since_tick_pids"
  }

  /// Where this rule's processes begin.
  var horizon: ProcessScan.Horizon {
    get { ProcessScan.Horizon(ticks: since, bootID: bootID, startedInTick: sinceTickPIDs ?? []) }
    set {
      since = newValue.ticks
      bootID = newValue.bootID
      sinceTickPIDs = newValue.startedInTick
    }
  }

  /// Whether the process `pid`, started at `startTime` (clock ticks since boot), is new
  /// to this rule. After a reboot every process is.
  func isNew(pid: Int32, startTime: UInt64, bootID now: String) -> Bool {
    if sinceTickPIDs == nil && startTime == since && bootID == now { return false }
    return horizon.isBefore(pid: pid, startTime: startTime, bootID: now)
  }
}

/// The rules, persisted in `rules.json` in the state directory (replaced atomically on
/// every change, so a daemon restart finds them), with what each did since the daemon
/// started (kept in memory; the audit log has the record).
final class RuleBook: @unchecked Sendable {
  private let path: String
  private let lock = Lock()
  private var rules: [Rule] = []
  private var applied: [String: Int] = [:]
  private var failures: [String: [ProcessOutcome]] = [:]
  static let keptFailures = 20

  init(stateDirectory: String) {
    path = StateDirectory(stateDirectory).rules
    if let bytes = StateFile.read(path) {
      rules = (try? JSONDecoder().decode([Rule].self, from: Data(bytes))) ?? []
    }
  }

  var all: [Rule] { lock.withLock { rules } }
  var enabled: [Rule] { all.filter(\.enabled) }

  func rule(path: String, patchID: String) -> Rule? {
    all.first { $0.path == path && $0.patchID == patchID }
  }

  /// Records `rule`, replacing one for the same file and patch id.
  func record(_ rule: Rule) throws(StateFileError) {
    try update { rules in
      rules.removeAll { $0.key == rule.key }
      rules.append(rule)
    }
  }

  /// Forgets the rule for `path` and `patchID`; false when there is none.
  func remove(path: String, patchID: String) throws(StateFileError) -> Bool {
    var found = false
    try update { rules in
      found = rules.contains { $0.path == path && $0.patchID == patchID }
      rules.removeAll { $0.path == path && $0.patchID == patchID }
    }
    return found
  }

  /// Enables or disables the rule for `path` and `patchID`; false when there is none.
  /// Enabling moves its horizon to `horizon`, taken before `enable --all-of` listed the
  /// processes it deals with itself (those started while the rule was off).
  func setEnabled(
    path: String, patchID: String, _ enabled: Bool, horizon: ProcessScan.Horizon? = nil
  ) throws(StateFileError) -> Bool {
    var found = false
    try update { rules in
      for i in rules.indices where rules[i].path == path && rules[i].patchID == patchID {
        found = true
        if enabled && !rules[i].enabled {
          rules[i].horizon = horizon ?? ProcessScan.horizon()
        }
        rules[i].enabled = enabled
      }
    }
    return found
  }

  private func update(_ change: (inout [Rule]) -> Void) throws(StateFileError) {
    lock.lock()
    defer { lock.unlock() }
    var next = rules
    change(&next)
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    let data = (try? encoder.encode(next)) ?? Data("[]".utf8)
    try StateFile.replace(path, with: data)
    rules = next
  }

  func noteApplied(_ rule: Rule) {
    lock.withLock { applied[rule.key, default: 0] += 1 }
  }

  func noteFailure(_ rule: Rule, _ outcome: ProcessOutcome) {
    lock.withLock {
      var list = failures[rule.key, default: []]
      list.append(outcome)
      failures[rule.key] = Array(list.suffix(Self.keptFailures))
    }
  }

  /// The rules as `swpatch rules` and `status` show them; a caller other than root sees
  /// its own only.
  func statuses(uid: UInt32?, path: String? = nil) -> [RuleStatus] {
    lock.withLock {
      rules.filter { (uid == nil || $0.uid == uid) && (path == nil || $0.path == path) }.map {
        RuleStatus(
          path: $0.path, patch: $0.patchID, enabled: $0.enabled, created: $0.created, uid: $0.uid,
          applied: applied[$0.key] ?? 0, failures: failures[$0.key] ?? [])
      }
    }
  }
}
