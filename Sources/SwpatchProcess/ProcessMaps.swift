import FoundationEssentials
import Glibc
import SwpatchBase

/// One line of /proc/PID/maps.
public struct MapEntry: Sendable, Equatable {
  public let start: UInt64
  public let end: UInt64
  public let permissions: String
  public let offset: UInt64
  public let device: String
  public let inode: UInt64
  /// The mapped file (or `[heap]`, `[vdso]`...); empty for anonymous memory. A file
  /// deleted since it was mapped ends in " (deleted)".
  public let path: String

  public var isExecutable: Bool { permissions.contains("x") }
  public var isFileBacked: Bool { inode != 0 && path.hasPrefix("/") }
  /// The name /proc/PID/map_files uses for this mapping.
  public var mapFilesName: String { String(start, radix: 16) + "-" + String(end, radix: 16) }

  /// Parses one maps line; nil for a line that does not have the kernel's shape.
  public init?(line: Substring) {
    let fields = line.split(separator: " ", maxSplits: 5, omittingEmptySubsequences: true)
    guard fields.count >= 5 else { return nil }
    let range = fields[0].split(separator: "-")
    guard range.count == 2, let start = UInt64(range[0], radix: 16),
      let end = UInt64(range[1], radix: 16), let offset = UInt64(fields[2], radix: 16),
      let inode = UInt64(fields[4])
    else { return nil }
    self.start = start
    self.end = end
    self.permissions = String(fields[1])
    self.offset = offset
    self.device = String(fields[3])
    self.inode = inode
    self.path = fields.count > 5 ? fields[5].trimmed(newlines: false) : ""
  }

  public init(
    start: UInt64, end: UInt64, permissions: String, offset: UInt64, device: String,
    inode: UInt64, path: String
  ) {
    (self.start, self.end, self.permissions, self.offset) = (start, end, permissions, offset)
    (self.device, self.inode, self.path) = (device, inode, path)
  }
}

/// The address-space layout of a process, as /proc/PID/maps shows it.
public enum ProcessMaps {
  public static func read(pid: Int32) throws(ProcessError) -> [MapEntry] {
    guard let text = ProcFile.read(TargetProcess.directory(of: pid) + "/maps") else {
      throw .noSuchProcess(pid: pid)
    }
    return text.split(separator: "\n").compactMap(MapEntry.init(line:))
  }

  /// Unmapped gaps of the address space (user half only), in address order.
  public static func gaps(in maps: [MapEntry]) -> [Range<UInt64>] {
    var gaps: [Range<UInt64>] = []
    var cursor: UInt64 = 0x10000  // below mmap_min_addr nothing can be mapped
    for entry in maps.sorted(by: { $0.start < $1.start }) {
      if entry.start > cursor { gaps.append(cursor..<entry.start) }
      cursor = max(cursor, entry.end)
    }
    let top: UInt64 = 0x7fff_ffff_f000
    if cursor < top { gaps.append(cursor..<top) }
    return gaps
  }
}
