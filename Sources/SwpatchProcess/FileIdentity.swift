import FoundationEssentials
import Glibc
import SwpatchBase
import SystemPackage

/// A file's device and inode, formatted as /proc/PID/maps shows them: how a mapping is
/// matched to a file.
public struct FileIdentity: Sendable, Hashable, Codable {
  public let device: String
  public let inode: UInt64

  public init(device: String, inode: UInt64) {
    self.device = device
    self.inode = inode
  }

  /// The identity of the file at `path`; nil when it cannot be stat'ed.
  public static func of(path: String) -> FileIdentity? {
    var info = stat()
    guard stat(path, &info) == 0 else { return nil }
    let dev = UInt64(info.st_dev)
    // glibc's gnu_dev_major/minor, which are macros Swift cannot import.
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & ~UInt64(0xfff))
    let minor = (dev & 0xff) | ((dev >> 12) & ~UInt64(0xff))
    return FileIdentity(
      device: hexDigits(major, width: 2) + ":" + hexDigits(minor, width: 2), inode: UInt64(info.st_ino))
  }
}

extension StoppedTarget {
  /// The identity of the file behind the target's descriptor `fd`.
  public func identity(ofDescriptor fd: Int32) throws(ProcessError) -> FileIdentity {
    try checkHeld()
    let path = "\(directory)/fd/\(fd)"
    guard let identity = FileIdentity.of(path: path) else {
      throw .io(path: path, errno: Errno(rawValue: errno))
    }
    return identity
  }

  /// The target's descriptors open on the file `identity`: how a memfd of ours is found
  /// again when its library is unloaded (the registry keeps no descriptor numbers).
  public func descriptors(of identity: FileIdentity) throws(ProcessError) -> [Int32] {
    try checkHeld()
    let folder = "\(directory)/fd"
    guard let names = try? FileManager.default.contentsOfDirectory(atPath: folder) else {
      throw .io(path: folder, errno: Errno(rawValue: errno))
    }
    return names.compactMap(Int32.init).filter { FileIdentity.of(path: "\(folder)/\($0)") == identity }
      .sorted()
  }

  /// Copies the file at `source` into the file behind the target's descriptor `fd`,
  /// through /proc, which reaches it whatever mount namespace the target lives in; a
  /// chunk at a time, so a large file is never held in memory whole.
  public func copy(file source: String, intoDescriptor fd: Int32, chunkSize: Int) throws(ProcessError) {
    try checkHeld()
    let path = "\(directory)/fd/\(fd)"
    let input = try Self.io(source) {
      try FileDescriptor.open(FilePath(source), .readOnly, options: [.closeOnExec])
    }
    defer { try? input.close() }
    let output = try Self.io(path) {
      try FileDescriptor.open(FilePath(path), .writeOnly, options: [.closeOnExec])
    }
    defer { try? output.close() }
    var chunk = [UInt8](repeating: 0, count: chunkSize)
    while true {
      let count = try Self.io(source) { try chunk.withUnsafeMutableBytes { try input.read(into: $0) } }
      if count == 0 { return }
      _ = try Self.io(path) { try chunk[..<count].withUnsafeBytes { try output.writeAll($0) } }
    }
  }

  /// Writes each of `edits` (bytes at a file offset) into the file behind the target's
  /// descriptor `fd`, after `copy(file:intoDescriptor:chunkSize:)` filled it.
  public func write(
    _ edits: [(offset: UInt64, bytes: [UInt8])], intoDescriptor fd: Int32
  ) throws(ProcessError) {
    try checkHeld()
    guard !edits.isEmpty else { return }
    let path = "\(directory)/fd/\(fd)"
    let output = try Self.io(path) {
      try FileDescriptor.open(FilePath(path), .writeOnly, options: [.closeOnExec])
    }
    defer { try? output.close() }
    for edit in edits {
      _ = try Self.io(path) {
        try output.writeAll(toAbsoluteOffset: Int64(edit.offset), edit.bytes)
      }
    }
  }

  /// `body`'s result, its Errno as `io(path:errno:)`.
  private static func io<T>(_ path: String, _ body: () throws -> T) throws(ProcessError) -> T {
    do {
      return try body()
    } catch let errno as Errno {
      throw .io(path: path, errno: errno)
    } catch {
      throw .io(path: path, errno: .ioError)
    }
  }
}
