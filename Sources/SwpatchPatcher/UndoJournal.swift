import Foundation
import Glibc
import SwpatchProcess
import SwpatchRegistry

/// A transaction's undo log, kept on disk from its first write into a target until the
/// registry has recorded the result. If swpatch dies in between, the next daemon puts
/// the old bytes back (`Engine.recoverInterruptedOperations`), so the target and the
/// registry agree again instead of the target running a patch nobody knows of.
///
/// One file per operation, `journal/<pid>-<start time>.log`: a header line with the
/// target and the registry generation the operation started from, then one line per
/// write, appended before the write is made. No fsync, as for the registry: a crash of
/// the machine ends the target too.
final class UndoJournal {
  struct Header: Codable {
    var pid: Int32
    var startTime: UInt64
    /// The target's registry generation before the operation (0: not in the registry).
    var generation: UInt64
  }

  struct Entry: Codable {
    var address: UInt64
    var bytes: [UInt8]
  }

  let path: String
  private var fd: Int32

  /// Starts the journal of an operation on `target`, whose registry state is at
  /// `generation`.
  init(directory: String, target: TargetID, generation: UInt64) throws {
    let folder = directory + "/journal"
    try FileManager.default.createDirectory(
      atPath: folder, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
    path = folder + "/\(target.pid)-\(target.startTime).log"
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0o600)
    guard fd >= 0 else { throw StoreError.io(path: path, reason: String(cString: strerror(errno))) }
    try append(Header(pid: target.pid, startTime: target.startTime, generation: generation))
  }

  deinit { if fd >= 0 { close(fd) } }

  /// Records what is at `address` before it is overwritten.
  func record(address: UInt64, previous: [UInt8]) throws {
    try append(Entry(address: address, bytes: previous))
  }

  /// The operation is committed (or fully rolled back): the journal is no longer needed.
  func discard() {
    if fd >= 0 { close(fd) }
    fd = -1
    unlink(path)
  }

  private func append<T: Encodable>(_ value: T) throws {
    var line = (try? JSONEncoder().encode(value)) ?? Data()
    line.append(0x0a)
    let written = line.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    guard written == line.count else {
      throw StoreError.io(path: path, reason: String(cString: strerror(errno)))
    }
  }

  /// The journals left behind in `directory` by operations that never finished: each
  /// header with its entries, oldest first. A torn last line (killed mid-append) is
  /// skipped: its write had not been made.
  static func leftovers(in directory: String) -> [(path: String, header: Header, entries: [Entry])] {
    let folder = directory + "/journal"
    let names = (try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []
    return names.filter { $0.hasSuffix(".log") }.sorted().compactMap { name in
      let path = folder + "/" + name
      guard let data = FileManager.default.contents(atPath: path) else { return nil }
      let lines = data.split(separator: 0x0a).map { Data($0) }
      guard let first = lines.first, let header = try? JSONDecoder().decode(Header.self, from: first)
      else {
        unlink(path)
        return nil
      }
      let entries = lines.dropFirst().compactMap { try? JSONDecoder().decode(Entry.self, from: $0) }
      return (path, header, entries)
    }
  }
}
