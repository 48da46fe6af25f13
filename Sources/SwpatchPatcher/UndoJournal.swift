import FoundationEssentials
import Glibc
import SwpatchProcess
import SwpatchRegistry
import SwpatchState
import SystemPackage

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
  private var fd: FileDescriptor?

  /// Starts the journal of an operation on `target`, whose registry state is at
  /// `generation`.
  init(state: StateDirectory, target: TargetID, generation: UInt64) throws {
    path = state.journal(pid: target.pid, startTime: target.startTime)
    do {
      try state.create(state.journals)
      fd = try StateFile.openForAppending(path, truncate: true)
    } catch {
      throw StoreError.io(path: error.path, reason: "\(error.errno)")
    }
    try append(Header(pid: target.pid, startTime: target.startTime, generation: generation))
  }

  /// Goes on appending to the journal a dead daemon left at `path` (to finish its
  /// transition); nil when it cannot be opened.
  init?(reopening path: String) {
    self.path = path
    guard let fd = try? StateFile.openForAppending(path, truncate: false) else { return nil }
    self.fd = fd
  }

  deinit { try? fd?.close() }

  /// One line: a transition another daemon can finish (see `TransitionRecord`).
  private struct TransitionLine: Codable {
    var transition: TransitionRecord
  }

  /// Records what finishing the operation's transition takes.
  func record(transition: TransitionRecord) throws {
    try append(TransitionLine(transition: transition))
  }

  /// One line: every write is made; the registry is to record `commit` (see
  /// `Engine.runStopped`).
  private struct CommitLine: Codable {
    var commit: TargetState
  }

  /// Records, as the stop's last act, the state the registry is to get once the target
  /// runs again.
  func record(commit: TargetState) throws {
    try append(CommitLine(commit: commit))
  }

  /// Records what is at `address` before it is overwritten.
  func record(address: UInt64, previous: [UInt8]) throws {
    try append(Entry(address: address, bytes: previous))
  }

  /// The operation is committed (or fully rolled back): the journal is no longer needed.
  func discard() {
    try? fd?.close()
    fd = nil
    unlink(path)
  }

  private func append<T: Encodable>(_ value: T) throws {
    guard let fd else { return }
    var line = (try? JSONEncoder().encode(value)) ?? Data()
    line.append(0x0a)
    do {
      try StateFile.append(line, to: fd, path: path)
    } catch {
      throw StoreError.io(path: error.path, reason: "\(error.errno)")
    }
  }

  /// Writes the old bytes of `entries` back into `target`, newest first: the target is
  /// then as it was before the operation's first write. The target ran since swpatch
  /// died, so a write is skipped where it would land under a thread: inside the bytes
  /// a thread will execute, or `int3` over the instruction a thread is at (a thread
  /// moved into a relocated prologue, blocked in a system call there). What is skipped
  /// is code no hook reaches any more: a slot left in place, never reused.
  static func putBack(_ entries: [Entry], into target: any TargetSession) throws(ProcessError) {
    var positions: [UInt64] = []
    for tid in target.threads { positions.append(try target.instructionPointer(of: tid)) }
    for entry in entries.reversed() {
      let range = entry.address..<entry.address + UInt64(entry.bytes.count)
      let underAThread = try !target.threadsInside([range]).isEmpty
      let trapsAThread = entry.bytes.allSatisfy { $0 == 0xcc } && positions.contains { range.contains($0) }
      if underAThread || trapsAThread { continue }
      try target.write(entry.bytes, at: entry.address)
    }
  }

  /// The journals left behind in `directory` by operations that never finished: each
  /// header with its entries, oldest first. A torn last line (killed mid-append) is
  /// skipped: its write had not been made.
  static func leftovers(in state: StateDirectory) -> [(
    path: String, header: Header, entries: [Entry], transition: TransitionRecord?, commit: TargetState?
  )] {
    let folder = state.journals
    let names = (try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []
    return names.filter { $0.hasSuffix(".log") }.sorted().compactMap { name in
      let path = folder + "/" + name
      guard let data = StateFile.read(path) else { return nil }
      let lines = data.split(separator: 0x0a).map { Data($0) }
      guard let first = lines.first, let header = try? JSONDecoder().decode(Header.self, from: first)
      else {
        unlink(path)
        return nil
      }
      let entries = lines.dropFirst().compactMap { try? JSONDecoder().decode(Entry.self, from: $0) }
      let transition = lines.dropFirst().lazy.compactMap {
        try? JSONDecoder().decode(TransitionLine.self, from: $0).transition
      }.first
      let commit = lines.dropFirst().lazy.compactMap {
        try? JSONDecoder().decode(CommitLine.self, from: $0).commit
      }.first
      return (path, header, entries, transition, commit)
    }
  }
}
