import FoundationEssentials
import Glibc

/// What `attach`, `enable`, `disable` or `remove --all-of PATH` did to each process of the file:
/// each one is its own all-or-nothing operation. The keys are a contract (docs/cli.md):
/// `patched` counts the processes changed, `already` those that were already in the
/// state asked for, `skipped` and `failed` list the others with why. Exit 0 only when
/// `failed` is empty.
public struct AllOfReport: Codable, Sendable, Equatable {
  public var operation: String
  /// The file, as given.
  public var path: String
  public var patch: String
  public var dryRun: Bool
  public var patched: Int
  public var already: Int
  public var skipped: [ProcessOutcome]
  public var failed: [ProcessOutcome]
  /// Every process looked at, in pid order, with its result.
  public var processes: [ProcessOutcome]
  /// What happened to the rule for new processes: `recorded`, `enabled`, `disabled`,
  /// `removed`, `unchanged`, or nil when none was touched (a dry run).
  public var rule: String?
  public var notes: [String]

  public init(
    operation: String, path: String, patch: String, dryRun: Bool, processes: [ProcessOutcome],
    rule: String?, notes: [String]
  ) {
    self.operation = operation
    self.path = path
    self.patch = patch
    self.dryRun = dryRun
    self.processes = processes
    self.patched = processes.filter { $0.result == .patched }.count
    self.already = processes.filter { $0.result == .already }.count
    self.skipped = processes.filter { $0.result == .skipped }
    self.failed = processes.filter { $0.result == .failed }
    self.rule = rule
    self.notes = notes
  }

  enum CodingKeys: String, CodingKey {
    case operation, path, patch, patched, already, skipped, failed, processes, rule, notes
    case dryRun = "dry_run"
  }
}

/// One process of an `--all-of` operation.
public struct ProcessOutcome: Codable, Sendable, Equatable {
  public enum Result: String, Codable, Sendable {
    /// Changed as asked (attached, enabled or disabled).
    case patched
    /// Already in the state asked for.
    case already
    /// Not one this operation applies to (no such patch there, not the caller's,
    /// exited meanwhile, another build), with why.
    case skipped
    /// The operation was refused or failed there; the process is unchanged.
    case failed
  }

  public var pid: Int32
  public var result: Result
  public var code: String?
  public var message: String?
  public var stoppedUs: Int64?

  public init(
    pid: Int32, result: Result, code: String? = nil, message: String? = nil, stoppedUs: Int64? = nil
  ) {
    self.pid = pid
    self.result = result
    self.code = code
    self.message = message
    self.stoppedUs = stoppedUs
  }

  enum CodingKeys: String, CodingKey {
    case pid, result, code, message
    case stoppedUs = "stopped_us"
  }
}

/// A rule (`attach --all-of`): while enabled, the daemon patches every new process of
/// the file as it appears. As `swpatch rules` and `status` show it.
public struct RuleStatus: Codable, Sendable, Equatable {
  public var path: String
  public var patch: String
  public var enabled: Bool
  /// When it was recorded (ISO 8601, UTC).
  public var created: String
  /// The uid that recorded it: the rule patches only processes that uid may change.
  public var uid: UInt32
  /// New processes the rule patched since the daemon started.
  public var applied: Int
  /// New processes the patch could not be applied to (left running untouched), newest
  /// last, at most 20.
  public var failures: [ProcessOutcome]

  public init(
    path: String, patch: String, enabled: Bool, created: String, uid: UInt32, applied: Int,
    failures: [ProcessOutcome]
  ) {
    self.path = path
    self.patch = patch
    self.enabled = enabled
    self.created = created
    self.uid = uid
    self.applied = applied
    self.failures = failures
  }
}
