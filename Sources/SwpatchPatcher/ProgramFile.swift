import FoundationEssentials
import Glibc
import SwpatchBase
import SwpatchProcess
import SwpatchSymbols

/// The file `--all-of PATH` names, checked once: an ELF executable or shared library,
/// known by device and inode (so another path or a hard link to it matches), with its
/// GNU build id. Its processes are every process that runs it or has it mapped.
public struct ProgramFile: Sendable, Equatable, Codable {
  public let path: String
  public let identity: FileIdentity
  public let buildID: String?

  public init(path: String, identity: FileIdentity, buildID: String?) {
    self.path = path
    self.identity = identity
    self.buildID = buildID
  }

  /// The file's name as maps and `build_ids` name objects (`nginx`, `libc.so.6`).
  public var name: String { PathText.lastComponent(path) }

  /// Checks `path`: it must exist and be a 64-bit ELF file (`not_elf` otherwise).
  public static func open(_ path: String) throws(PatchError) -> ProgramFile {
    guard let identity = FileIdentity.of(path: path) else {
      throw .notELF(path: path, reason: "does not exist")
    }
    var info = stat()
    if stat(path, &info) == 0, info.st_mode & S_IFMT == S_IFDIR {
      throw .notELF(path: path, reason: "is a directory")
    }
    let elf: ElfFile
    do {
      elf = try SymbolCache.shared.file(at: path)
    } catch {
      throw .notELF(path: path, reason: "is not an ELF file")
    }
    return ProgramFile(path: path, identity: identity, buildID: elf.buildID)
  }

  /// Every process that runs this file or has it mapped, among `pids` (default: all).
  /// When `pins` pin a build id for this file's name, a process whose executable has
  /// that name and that build id counts too (the same build installed again, at
  /// another inode, or a process still running the file a package upgrade replaced).
  public func processes(pins: [String: String] = [:], among pids: [Int32]? = nil) -> [Int32] {
    let all = pids ?? ProcessScan.processIDs()
    let own = getpid()
    let found = Set(ProcessScan.processes(of: identity, mapped: true, among: all).filter { $0 != own })
    guard let pinned = pins[name] else { return found.sorted() }
    var extra: [Int32] = []
    for pid in all where pid != own && !found.contains(pid) {
      guard let exe = ProcessScan.executablePath(of: pid),
        PathText.lastComponent(exe.replacing(" (deleted)", with: "")) == name,
        let elf = try? SymbolCache.shared.file(at: ProcessScan.executableFile(of: pid)),
        elf.buildID == pinned
      else { continue }
      extra.append(pid)
    }
    return (Array(found) + extra).sorted()
  }

  /// Whether `pid` is one of this file's processes (see `processes`).
  public func matches(_ pid: Int32, pins: [String: String] = [:]) -> Bool {
    !processes(pins: pins, among: [pid]).isEmpty
  }
}
