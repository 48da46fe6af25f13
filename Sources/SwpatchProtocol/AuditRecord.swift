import FoundationEssentials
import Glibc

/// One line of `audit.log`: a state-changing request, accepted or refused, or a target
/// the daemon saw exit. The keys are a contract (docs/protocol.md).
public struct AuditRecord: Codable, Sendable, Equatable {
  /// ISO 8601, UTC, with milliseconds.
  public var time: String
  /// The caller's uid and pid (SO_PEERCRED); nil for the daemon's own records.
  public var uid: UInt32?
  public var callerPid: Int32?
  /// The target.
  public var pid: Int32
  public var startTime: UInt64?
  /// attach, enable, disable, or exit (the target exited and its entries were dropped).
  public var operation: String
  public var patch: String?
  /// ok, refused (nothing was changed), or dropped.
  public var result: String
  public var code: String?
  public var message: String?
  /// How long the target was stopped, in microseconds.
  public var stoppedUs: Int64?
  /// How often a `stack` check had to resume the target and try again.
  public var retries: Int?
  /// Threads moved out of rewritten bytes (see `OperationReport.threadsMoved`).
  public var threadsMoved: Int?
  /// Threads caught on return by the per-thread transition, and how long it ran.
  public var threadsCaught: Int?
  public var transitionUs: Int64?
  public var options: OperationOptions?

  public init(
    uid: UInt32?, callerPid: Int32?, pid: Int32, startTime: UInt64?, operation: String,
    patch: String?, result: String, code: String? = nil, message: String? = nil,
    stoppedUs: Int64? = nil, options: OperationOptions? = nil
  ) {
    self.time = AuditRecord.timestamp(Date())
    self.uid = uid
    self.callerPid = callerPid
    self.pid = pid
    self.startTime = startTime
    self.operation = operation
    self.patch = patch
    self.result = result
    self.code = code
    self.message = message
    self.stoppedUs = stoppedUs
    self.options = options
  }

  enum CodingKeys: String, CodingKey {
    case time, uid, pid, operation, patch, result, code, message, options, retries
    case threadsMoved = "threads_moved"
    case threadsCaught = "threads_caught"
    case transitionUs = "transition_us"
    case callerPid = "caller_pid"
    case startTime = "start_time"
    case stoppedUs = "stopped_us"
  }

  public static func timestamp(_ date: Date) -> String {
    date.formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true))
  }
}
