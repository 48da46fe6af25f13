import FoundationEssentials
import Glibc
import SwpatchBase
import SwpatchPatcher
import SwpatchProtocol
import SwpatchState
import Synchronization

/// `audit.log` in the state directory: JSON lines, appended with O_APPEND so each
/// record lands whole, readable only by root.
public final class AuditLog: Sendable {
  public let path: String
  /// One appender at a time: records keep the order in which they were made.
  private let appending = Mutex(())

  public init(stateDirectory: String) {
    path = StateDirectory(stateDirectory).auditLog
  }

  /// Appends one record. A failure to log is reported on stderr, never fatal: the
  /// operation it records has already happened.
  public func append(_ record: AuditRecord) {
    let line = WireCoding.line(record)
    appending.withLock { _ in
      do {
        try StateFile.appendLine(line, to: path)
      } catch {
        writeToStandardError("swpatchd: cannot write \(error)\n")
      }
    }
  }

  /// Every record, oldest first, optionally only those about `pid` or by `uid`.
  /// Lines that do not parse (a torn last line after a crash) are skipped.
  public func records(pid: Int32? = nil, uid: UInt32? = nil) -> [AuditRecord] {
    guard let data = StateFile.read(path) else { return [] }
    let decoder = JSONDecoder()
    return data.split(separator: 0x0a).compactMap { try? decoder.decode(AuditRecord.self, from: Data($0)) }
      .filter { (pid == nil || $0.pid == pid) && (uid == nil || $0.uid == uid) }
  }
}
