import FoundationEssentials
import Glibc
import SwpatchBase

extension TargetProcess {
  /// What tells one program image of a process from the next: the 16 random bytes the
  /// kernel puts on a new program's stack at every `execve` (the auxiliary vector's
  /// `AT_RANDOM`). `execve` keeps the pid and the start time, so those alone cannot see
  /// that the process now runs another program, whose memory an old registry entry
  /// would then describe wrongly. Nil when the auxiliary vector or the stack cannot be
  /// read (then nothing is compared).
  public static func execID(of pid: Int32) -> [UInt8]? {
    let atRandom: UInt64 = 25
    guard let auxv = ProcFile.bytes(directory(of: pid) + "/auxv"), auxv.count >= 16 else { return nil }
    var address: UInt64?
    auxv.withUnsafeBytes { raw in
      for i in stride(from: 0, to: raw.count - 15, by: 16) {
        let key = raw.loadUnaligned(fromByteOffset: i, as: UInt64.self)
        if key == atRandom { address = raw.loadUnaligned(fromByteOffset: i + 8, as: UInt64.self) }
      }
    }
    guard let address, address != 0 else { return nil }
    return read(file: directory(of: pid) + "/mem", at: address, count: 16)
  }

  /// The object file's own bytes behind each of `addresses` in `pid` (`count` bytes
  /// from each, fewer where the mapping ends first): the file of the mapping that holds
  /// the address, read through /proc/PID/map_files (so a file deleted or replaced on
  /// disk since still gives what was mapped), at the mapping's file offset. What a
  /// function's entry held before anyone wrote to it: a process forked from a patched
  /// parent, or a debugger, may have changed the memory, never the file. Addresses in
  /// anonymous memory or an unreadable file are left out. /proc/PID/maps is read once.
  public static func objectBytes(pid: Int32, at addresses: [UInt64], count: Int) -> [UInt64: [UInt8]] {
    guard !addresses.isEmpty, let maps = try? ProcessMaps.read(pid: pid) else { return [:] }
    let directory = Self.directory(of: pid)
    var found: [UInt64: [UInt8]] = [:]
    for address in addresses {
      guard let mapping = maps.first(where: { $0.start <= address && address < $0.end }),
        mapping.isFileBacked
      else { continue }
      let length = Int(min(UInt64(count), mapping.end - address))
      let offset = mapping.offset + (address - mapping.start)
      found[address] = read(file: directory + "/map_files/\(mapping.mapFilesName)", at: offset, count: length)
    }
    return found
  }

  /// The path of this process's own executable (`/proc/self/exe`), to start another copy
  /// of it (the daemon, from the CLI).
  public static var ownExecutable: String? {
    var buffer = [CChar](repeating: 0, count: 4096)
    let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
    return n > 0 ? String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self) : nil
  }

  /// The command line of `pid` (`/proc/PID/cmdline`), one string per argument.
  public static func commandLine(of pid: Int32) -> [String]? {
    ProcFile.bytes("/proc/\(pid)/cmdline").map { raw in
      raw.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
    }
  }

  /// A size line of `/proc/PID/status` (`VmRSS`, `VmHWM`...), in KiB; nil when the
  /// process is gone or has no such line.
  public static func memoryKiB(of pid: Int32, field: String) -> UInt64? {
    guard let status = ProcFile.read("/proc/\(pid)/status") else { return nil }
    return statusField(field + ":", in: status).first.map(UInt64.init)
  }

  /// The processor's model name (`/proc/cpuinfo`), for reports of where a figure was
  /// measured.
  public static var cpuModel: String {
    let info = ProcFile.read("/proc/cpuinfo") ?? ""
    return info.split(separator: "\n").first { $0.hasPrefix("model name") }
      .flatMap { $0.split(separator: ":", maxSplits: 1).last }
      .map { $0.trimmed(newlines: false) } ?? "unknown"
  }

  /// The processes `pid`'s threads have forked that are still alive
  /// (`/proc/PID/task/TID/children`), in no order.
  public static func children(of pid: Int32) -> [Int32] {
    threadIDs(of: pid).flatMap { tid in
      (ProcFile.read("/proc/\(pid)/task/\(tid)/children") ?? "").split(separator: " ").compactMap {
        Int32($0)
      }
    }
  }

  /// The parent's pid (`PPid:` of /proc/PID/status); nil when the process is gone.
  public static func parentPid(of pid: Int32) -> Int32? {
    guard let status = ProcFile.read("/proc/\(pid)/status") else { return nil }
    return statusField("PPid:", in: status).first.map { Int32(truncatingIfNeeded: $0) }
  }

  /// `count` bytes of `file` at `offset`, or nil.
  private static func read(file: String, at offset: UInt64, count: Int) -> [UInt8]? {
    let fd = open(file, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var bytes = [UInt8](repeating: 0, count: count)
    let n = pread(fd, &bytes, count, off_t(Int64(bitPattern: offset)))
    return n == count ? bytes : nil
  }
}
