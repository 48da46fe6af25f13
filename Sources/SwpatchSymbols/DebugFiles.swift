import FoundationEssentials
import Glibc
import SwpatchBase

/// Finds the separate debug file of a stripped object, in the order libdwfl's standard
/// debuginfo search uses: the build-id tree first, then `.gnu_debuglink` next to the
/// object, in its `.debug/` folder, and under the debug root. A candidate counts only if
/// it is the object's: the same build id, or (for an object without one) the CRC-32 the
/// debug link records.
public enum DebugFiles {
  /// Where debug files are installed: `$SWPATCH_DEBUG_ROOT`, default `/usr/lib/debug`.
  public static var root: String {
    ProcessInfo.processInfo.environment["SWPATCH_DEBUG_ROOT"] ?? "/usr/lib/debug"
  }

  /// The debug file of `elf`, whose path in the target is `path`; `fileSystem` is
  /// the prefix under which the target's files are visible (`/proc/PID/root`).
  public static func find(
    for elf: ElfFile, path: String, fileSystem: String = "", root: String = root,
    cache: SymbolCache = .shared
  ) -> ElfFile? {
    for candidate in candidates(for: elf, path: path, fileSystem: fileSystem, root: root)
    where FileManager.default.isReadableFile(atPath: candidate) {
      guard let debug = try? cache.file(at: candidate), debug.hasSymtab || debug.hasDebugInfo,
        belongs(debug, to: elf)
      else { continue }
      return debug
    }
    return nil
  }

  /// Candidate paths, best first.
  static func candidates(for elf: ElfFile, path: String, fileSystem: String, root: String) -> [String] {
    var paths: [String] = []
    if let id = elf.buildID, id.count > 2 {
      paths.append("\(root)/.build-id/\(id.prefix(2))/\(id.dropFirst(2)).debug")
    }
    if let link = elf.debugLink?.name {
      let directory = PathText.deletingLastComponent(path)
      paths += [
        "\(fileSystem)\(directory)/\(link)", "\(fileSystem)\(directory)/.debug/\(link)",
        "\(root)\(directory)/\(link)",
      ]
    }
    return paths
  }

  private static func belongs(_ debug: ElfFile, to elf: ElfFile) -> Bool {
    if let id = elf.buildID { return debug.buildID == id }
    guard let crc = elf.debugLink?.crc else { return false }
    return crc32(ofFileAt: debug.path) == crc
  }

  /// The CRC-32 (IEEE, as gdb and objcopy compute it for debug links) of a whole file.
  public static func crc32(ofFileAt path: String) -> UInt32? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var crc: UInt32 = 0xffff_ffff
    var chunk = [UInt8](repeating: 0, count: 1 << 20)
    while true {
      let n = read(fd, &chunk, chunk.count)
      if n < 0 && errno == EINTR { continue }
      guard n > 0 else { break }
      for byte in chunk[0..<n] { crc = crcTable[Int((crc ^ UInt32(byte)) & 0xff)] ^ (crc >> 8) }
    }
    return ~crc
  }

  private static let crcTable: [UInt32] = (0..<256).map { n in
    var c = UInt32(n)
    for _ in 0..<8 { c = c & 1 != 0 ? 0xedb8_8320 ^ (c >> 1) : c >> 1 }
    return c
  }
}
