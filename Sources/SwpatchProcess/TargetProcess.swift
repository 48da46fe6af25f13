import CSwpatchShim
import Foundation
import SystemPackage

/// What /proc says about a process before anyone touches it.
public struct TargetProcess: Sendable, Equatable {
  public let pid: Int32
  /// Field 22 of /proc/PID/stat: with the pid, identifies the process across pid reuse.
  public let startTime: UInt64
  public let executable: String
  public let tracerPid: Int32
  public let uids: [UInt32]
  public let isKernelThread: Bool
  /// Exited but not yet reaped by its parent (state Z or X): not a process to patch.
  public let isZombie: Bool

  /// Reads /proc/PID/stat and /proc/PID/status; fails with a clear error when the pid
  /// does not exist or is a kernel thread.
  public static func inspect(_ pid: Int32) throws(ProcessError) -> TargetProcess {
    guard pid > 0, let stat = ProcFile.read("/proc/\(pid)/stat")
    else { throw .noSuchProcess(pid: pid) }
    // comm (field 2) may contain spaces and parentheses: split after the last ')'.
    guard let close = stat.lastIndex(of: ")") else { throw .noSuchProcess(pid: pid) }
    let rest = stat[stat.index(after: close)...].split(separator: " ")
    // rest[0] is field 3 (state); field N is rest[N - 3].
    guard rest.count > 19, let flags = UInt64(rest[9 - 3]), let start = UInt64(rest[22 - 3])
    else { throw .noSuchProcess(pid: pid) }
    let zombie = rest[0] == "Z" || rest[0] == "X"
    let pfKthread: UInt64 = 0x0020_0000
    let kernel = flags & pfKthread != 0
    let status = ProcFile.read("/proc/\(pid)/status") ?? ""
    let tracer = Int32(statusField("TracerPid:", in: status).first ?? 0)
    let uids = statusField("Uid:", in: status)
    let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/exe")) ?? ""
    return TargetProcess(
      pid: pid, startTime: start, executable: exe, tracerPid: tracer, uids: uids,
      isKernelThread: kernel, isZombie: zombie)
  }

  /// Refuses targets that cannot be patched, before anything is attached.
  public func checkPatchable() throws(ProcessError) {
    if isKernelThread { throw .kernelThread(pid: pid) }
    if isZombie { throw .processExited(pid: pid) }
    if tracerPid != 0 {
      let name =
        (try? String(contentsOfFile: "/proc/\(tracerPid)/comm", encoding: .utf8))?
        .trimmingCharacters(in: .whitespacesAndNewlines) ?? "unknown"
      throw .alreadyTraced(pid: pid, tracer: tracerPid, tracerName: name)
    }
  }

  /// Reads memory of the running process through /proc/PID/mem, without stopping it (as
  /// root, or as a tracer-capable owner); empty when it cannot be read. For pre-flight
  /// checks only: the process may change it right after.
  public func peek(at address: UInt64, count: Int) -> [UInt8] {
    let fd = open("/proc/\(pid)/mem", O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return [] }
    defer { close(fd) }
    var bytes = [UInt8](repeating: 0, count: count)
    let n = pread(fd, &bytes, count, off_t(Int64(bitPattern: address)))
    return n == count ? bytes : []
  }

  /// The thread ids listed in /proc/PID/task right now.
  public static func threadIDs(of pid: Int32) -> [Int32] {
    let names = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []
    return names.compactMap { Int32($0) }.sorted()
  }

  /// True when thread `tid` of `pid` is traced by a thread of this process.
  /// (TracerPid in /proc/PID/task/TID/status names the tracing thread, not its process.)
  public static func isTracedByUs(_ tid: Int32, in pid: Int32) -> Bool {
    let status = ProcFile.read("/proc/\(pid)/task/\(tid)/status") ?? ""
    let tracer = Int32(statusField("TracerPid:", in: status).first ?? 0)
    return tracer != 0 && isOurThread(tracer)
  }

  /// True when `tid` is a thread of this process.
  public static func isOurThread(_ tid: Int32) -> Bool {
    access("/proc/self/task/\(tid)", F_OK) == 0
  }

  /// True while a process with this pid and start time exists and has not exited.
  public static func isAlive(pid: Int32, startTime: UInt64) -> Bool {
    guard let current = try? inspect(pid) else { return false }
    return current.startTime == startTime && !current.isZombie
  }
}

extension TargetProcess {
  /// A pidfd for `pid` (pidfd_open): readable once the process exits, so a watcher
  /// learns of the exit at once instead of polling. Close-on-exec.
  public static func openPidfd(_ pid: Int32) throws(ProcessError) -> Int32 {
    let pidfdOpen = 434
    var error: Int32 = 0
    let fd = swp_syscall6(pidfdOpen, Int(pid), 0, 0, 0, 0, 0, &error)
    guard fd >= 0 else {
      throw error == ESRCH ? .noSuchProcess(pid: pid) : .permissionDenied(pid: pid, what: "pidfd_open")
    }
    return Int32(fd)
  }

  /// Ids of the owner of a process: real, effective, saved and filesystem uids and
  /// gids from /proc/PID/status, and the owner of /proc/PID itself (root when the
  /// process is not dumpable, e.g. after a set-uid exec).
  public static func credentials(of pid: Int32) -> (uids: [UInt32], gids: [UInt32], procOwner: UInt32)? {
    guard let status = ProcFile.read("/proc/\(pid)/status") else { return nil }
    var info = stat()
    guard stat("/proc/\(pid)", &info) == 0 else { return nil }
    return (statusField("Uid:", in: status), statusField("Gid:", in: status), UInt32(info.st_uid))
  }

  /// The numbers of one line of /proc/PID/status (`Uid:`, `Gid:`, `TracerPid:`).
  static func statusField(_ key: String, in status: String) -> [UInt32] {
    guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix(key) }) else { return [] }
    return line.dropFirst(key.count).split(whereSeparator: { $0 == "\t" || $0 == " " })
      .compactMap { UInt32($0) }
  }
}
