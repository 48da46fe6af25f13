import Foundation
import Glibc
import SwpatchPatcher

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
    case callerPid = "caller_pid"
    case startTime = "start_time"
    case stoppedUs = "stopped_us"
  }

  static func timestamp(_ date: Date) -> String {
    let formatter = ISO8601DateFormatter()
    formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
    return formatter.string(from: date)
  }
}

/// `audit.log` in the state directory: JSON lines, appended with O_APPEND so each
/// record lands whole, readable only by root.
public final class AuditLog: @unchecked Sendable {
  public let path: String
  private let lock = NSLock()

  public init(stateDirectory: String) {
    path = stateDirectory + "/audit.log"
  }

  /// Appends one record. A failure to log is reported on stderr, never fatal: the
  /// operation it records has already happened.
  public func append(_ record: AuditRecord) {
    let line = WireCoding.line(record)
    lock.lock()
    defer { lock.unlock() }
    let fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o600)
    guard fd >= 0 else {
      FileHandle.standardError.write(
        Data("swpatchd: cannot write \(path): \(String(cString: strerror(errno)))\n".utf8))
      return
    }
    defer { close(fd) }
    _ = line.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
  }

  /// Every record, oldest first, optionally only those about `pid` or by `uid`.
  /// Lines that do not parse (a torn last line after a crash) are skipped.
  public func records(pid: Int32? = nil, uid: UInt32? = nil) -> [AuditRecord] {
    guard let data = FileManager.default.contents(atPath: path) else { return [] }
    let decoder = JSONDecoder()
    return data.split(separator: 0x0a).compactMap { try? decoder.decode(AuditRecord.self, from: Data($0)) }
      .filter { (pid == nil || $0.pid == pid) && (uid == nil || $0.uid == uid) }
  }
}
