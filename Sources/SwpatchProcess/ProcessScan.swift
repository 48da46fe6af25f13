import FoundationEssentials
import Glibc
import SwpatchBase

/// Finding the processes of one file (`--all-of PATH`, rules): every process whose
/// executable is that file, or that has it mapped (a shared library), told by device
/// and inode, so a file reached by another path or a hard link still matches. Reads
/// `/proc` only; nothing is stopped.
public enum ProcessScan {
  /// Every process id listed in /proc right now (threads are not listed there).
  public static func processIDs() -> [Int32] {
    guard let folder = opendir("/proc") else { return [] }
    defer { closedir(folder) }
    var pids: [Int32] = []
    while let entry = readdir(folder) {
      let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
        String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
      }
      if let pid = Int32(name), pid > 0 { pids.append(pid) }
    }
    return pids.sorted()
  }

  /// The identity of the file `pid` runs (its `/proc/PID/exe`, which opens the very file
  /// even when it was deleted or replaced on disk); nil for kernel threads, zombies and
  /// processes that are gone.
  public static func executableIdentity(of pid: Int32) -> FileIdentity? {
    FileIdentity.of(path: "/proc/\(pid)/exe")
  }

  /// A path that opens the very file `pid` runs (`/proc/PID/exe`), for reading its ELF
  /// headers even when it was replaced on disk.
  public static func executableFile(of pid: Int32) -> String { "/proc/\(pid)/exe" }

  /// The path `pid`'s executable was started from (what `/proc/PID/exe` names, with
  /// ` (deleted)` when it is gone from disk); nil when it cannot be read.
  public static func executablePath(of pid: Int32) -> String? {
    try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/exe")
  }

  /// Whether `pid` has the file `identity` mapped (`/proc/PID/maps`).
  public static func maps(_ identity: FileIdentity, pid: Int32) -> Bool {
    guard let maps = ProcFile.read(TargetProcess.directory(of: pid) + "/maps") else { return false }
    let needle = " \(identity.device) \(identity.inode) "
    return maps.split(separator: "\n").contains { line in
      line.contains(needle)
        && MapEntry(line: line).map { $0.device == identity.device && $0.inode == identity.inode }
          ?? false
    }
  }

  /// Every process that runs the file `identity`, or (`mapped`) has it mapped at all,
  /// among `pids` (default: all of /proc). Kernel threads and zombies have neither.
  public static func processes(of identity: FileIdentity, mapped: Bool, among pids: [Int32]? = nil) -> [Int32]
  {
    (pids ?? processIDs()).filter { pid in
      executableIdentity(of: pid) == identity || (mapped && maps(identity, pid: pid))
    }
  }

  /// How long ago `pid` started, in milliseconds (its start time, field 22 of
  /// /proc/PID/stat in clock ticks, against /proc/uptime); nil when it is gone. Coarse:
  /// clock ticks are 10 ms here.
  public static func ageMilliseconds(of pid: Int32) -> Double? {
    guard let stat = ProcFile.read("/proc/\(pid)/stat"), let close = stat.lastIndex(of: ")"),
      let uptimeText = ProcFile.read("/proc/uptime"),
      let uptime = Double(uptimeText.split(separator: " ").first ?? "")
    else { return nil }
    let fields = stat[stat.index(after: close)...].split(separator: " ")
    guard fields.count > 19, let start = Double(fields[19]) else { return nil }
    let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
    return max(0, (uptime - start / ticks) * 1000)
  }

  /// This boot's id (`/proc/sys/kernel/random/boot_id`): start times count from boot, so
  /// one recorded in an earlier boot means nothing now.
  public static var bootID: String {
    (ProcFile.read("/proc/sys/kernel/random/boot_id") ?? "").trimmed()
  }

  /// Now, in the unit of process start times (clock ticks since boot). Read from the
  /// text of /proc/uptime in whole numbers, rounded down as the kernel rounds start
  /// times (through a `Double` it could come out one tick low).
  public static var ticksSinceBoot: UInt64 {
    guard let text = ProcFile.read("/proc/uptime"), let uptime = text.split(separator: " ").first else {
      return 0
    }
    return ticks(uptime: uptime, perSecond: UInt64(sysconf(Int32(_SC_CLK_TCK))))
  }

  /// `uptime` (seconds, as /proc/uptime prints them: `12345.67`) in clock ticks,
  /// rounded down; 0 when it is not a number.
  static func ticks(uptime: Substring, perSecond hz: UInt64) -> UInt64 {
    let parts = uptime.split(separator: ".", maxSplits: 1, omittingEmptySubsequences: false)
    guard let seconds = UInt64(parts[0]) else { return 0 }
    let digits = parts.count > 1 ? String(parts[1].prefix(9)) : ""
    guard let fraction = UInt64(digits.isEmpty ? "0" : digits) else { return 0 }
    var scale: UInt64 = 1
    for _ in 0..<digits.count { scale *= 10 }
    return seconds * hz + fraction * hz / scale
  }

  /// The start time of `pid` (field 22 of /proc/PID/stat, clock ticks since boot); nil
  /// when it is gone.
  public static func startTicks(of pid: Int32) -> UInt64? {
    guard let stat = ProcFile.read("/proc/\(pid)/stat"), let close = stat.lastIndex(of: ")") else {
      return nil
    }
    let fields = stat[stat.index(after: close)...].split(separator: " ")
    return fields.count > 19 ? UInt64(fields[19]) : nil
  }

  /// A moment that splits processes into those that started before it and those that
  /// start after. A start time is a clock tick (10 ms here), too coarse for that alone:
  /// a process can start in the very tick of the horizon but after it, so the processes
  /// already there that started in that tick are named.
  public struct Horizon: Sendable, Equatable {
    /// Clock ticks since boot `bootID`.
    public var ticks: UInt64
    public var bootID: String
    /// The processes that started in tick `ticks` before the horizon was taken.
    public var startedInTick: [Int32]

    public init(ticks: UInt64, bootID: String, startedInTick: [Int32]) {
      self.ticks = ticks
      self.bootID = bootID
      self.startedInTick = startedInTick
    }

    /// Whether the process `pid`, started at `startTime` (clock ticks since boot
    /// `bootID`), started after this horizon. After a reboot every process did.
    public func isBefore(pid: Int32, startTime: UInt64, bootID now: String) -> Bool {
      bootID != now || startTime > ticks || (startTime == ticks && !startedInTick.contains(pid))
    }
  }

  /// Now, as a horizon: the tick first, then the processes that started in it (one that
  /// starts in between is counted as before, which it nearly is).
  public static func horizon() -> Horizon {
    let boot = bootID
    let now = ticksSinceBoot
    let inTick = processIDs().filter { startTicks(of: $0) == now }
    return Horizon(ticks: now, bootID: boot, startedInTick: inTick)
  }
}
