import Foundation
import Glibc
import SwpatchPatcher
import SwpatchProtocol

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
