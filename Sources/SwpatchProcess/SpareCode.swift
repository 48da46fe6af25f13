import FoundationEssentials
import Glibc

extension StoppedTarget {
  /// An address where `count` bytes fit in an executable mapping after the end of an
  /// object's executable PT_LOAD segment, 16-byte aligned; nil when none has the room.
  ///
  /// Those bytes are mapped executable but belong to no code (the page's tail past the
  /// segment): nothing in the target jumps there, so swpatch may borrow them for the
  /// hijack stub before it has a trampoline page of its own.
  func spareCodeBytes(count: Int) throws(ProcessError) -> UInt64? {
    let maps = try ProcessMaps.read(pid: pid)
    for object in maps where object.isFileBacked && object.offset == 0 {
      for end in executableSegmentEnds(of: object) {
        let spot = (end + 15) & ~15
        let mapping = maps.first {
          $0.isExecutable && $0.path == object.path && $0.start <= end && end < $0.end
        }
        if let mapping, spot + UInt64(count) <= mapping.end { return spot }
      }
    }
    return nil
  }

  /// The end address of each executable PT_LOAD segment of the ELF object whose file
  /// offset 0 is mapped at `object`, read from its headers in the target's memory.
  private func executableSegmentEnds(of object: MapEntry) -> [UInt64] {
    guard let header = try? read(at: object.start, count: 64), header.starts(with: [0x7f, 0x45, 0x4c, 0x46]),
      header[4] == 2  // ELFCLASS64
    else { return [] }
    let tableOffset = Self.little(header, 32, 8)
    let entrySize = Self.little(header, 54, 2)
    let entries = Self.little(header, 56, 2)
    guard entrySize >= 56, tableOffset + entries * entrySize <= object.end - object.start,
      let table = try? read(at: object.start + tableOffset, count: Int(entries * entrySize))
    else { return [] }
    let segments = (0..<Int(entries)).map { Array(table[$0 * Int(entrySize)..<($0 + 1) * Int(entrySize)]) }
    let loads = segments.filter { Self.little($0, 0, 4) == 1 }  // PT_LOAD
    // The load bias: the segment that maps file offset 0 sits at the object's start.
    guard let first = loads.first(where: { Self.little($0, 8, 8) == 0 }) else { return [] }
    let bias = object.start &- (Self.little(first, 16, 8) & ~0xfff)
    return loads.filter { Self.little($0, 4, 4) & 1 != 0 }  // PF_X
      .map { bias &+ Self.little($0, 16, 8) &+ Self.little($0, 40, 8) }
  }

  private static func little(_ bytes: [UInt8], _ offset: Int, _ size: Int) -> UInt64 {
    (0..<size).reduce(0) { $0 | UInt64(bytes[offset + $1]) << (8 * $1) }
  }
}
