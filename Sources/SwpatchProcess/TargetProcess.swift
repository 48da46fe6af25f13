import CSwpatchShim
import FoundationEssentials
import Glibc
import SwpatchBase
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
  /// Exited or being killed: every thread is a zombie (state Z or X), or a SIGKILL is
  /// pending for the thread group. A zombie main thread whose other threads run (it
  /// called pthread_exit) is not: that process is alive.
  public let isZombie: Bool
  /// Where the files the threads share (maps, mem, fd, exe, map_files, root) are read:
  /// /proc/PID, or /proc/TID of a live thread once the main thread has exited (the
  /// kernel shows those of the main thread empty then).
  public let directory: String
  /// The `Seccomp:` mode of that thread: 0 none, 1 strict, 2 filter.
  public let seccomp: Int

  /// Reads /proc/PID/stat and /proc/PID/status; fails with a clear error when the pid
  /// does not exist, is a kernel thread, or is a thread of another process.
  public static func inspect(_ pid: Int32) throws(ProcessError) -> TargetProcess {
    guard pid > 0, let stat = ProcFile.read("/proc/\(pid)/stat"), let leader = parseStat(stat)
    else { throw .noSuchProcess(pid: pid) }
    let leaderStatus = ProcFile.read("/proc/\(pid)/status") ?? ""
    try checkIsProcess(pid, status: leaderStatus)
    var live: Int32? = pid
    if leader.zombie {
      live = threadIDs(of: pid).first { threadState($0, in: pid).map { $0 != "Z" && $0 != "X" } ?? false }
    }
    // /proc/TID, not /proc/PID/task/TID, which has no map_files.
    let directory = "/proc/\(live ?? pid)"
    let status = live == pid ? leaderStatus : ProcFile.read(directory + "/status") ?? leaderStatus
    let tracer = Int32(statusField("TracerPid:", in: status).first ?? 0)
    let uids = statusField("Uid:", in: status)
    let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: directory + "/exe")) ?? ""
    return TargetProcess(
      pid: pid, startTime: leader.start, executable: exe, tracerPid: tracer, uids: uids,
      isKernelThread: leader.flags & Self.pfKthread != 0,
      isZombie: live == nil || killPending(status), directory: directory,
      seccomp: Int(statusField("Seccomp:", in: status).first ?? 0))
  }

  /// Refuses a thread id that is not its process's id. /proc/TID exists for every
  /// thread, though `ls /proc` does not list it, so without this a thread would pass
  /// for a process of its own. A pid that does not exist passes (others report it).
  public static func checkIsProcess(_ pid: Int32, status: String? = nil) throws(ProcessError) {
    let text = status ?? ProcFile.read("/proc/\(pid)/status") ?? ""
    if let tgid = statusField("Tgid:", in: text).first, tgid != 0, tgid != UInt32(pid) {
      throw .notAProcess(tid: pid, pid: Int32(tgid))
    }
  }

  /// PF_KTHREAD of the flags in /proc/PID/stat (include/linux/sched.h): kernel-internal,
  /// in no uapi header.
  private static let pfKthread: UInt64 = 0x0020_0000

  /// State, flags and start time from a /proc/.../stat line.
  private static func parseStat(_ stat: String) -> (zombie: Bool, flags: UInt64, start: UInt64)? {
    // comm (field 2) may contain spaces and parentheses: split after the last ')'.
    guard let close = stat.lastIndex(of: ")") else { return nil }
    let rest = stat[stat.index(after: close)...].split(separator: " ")
    // rest[0] is field 3 (state); field N is rest[N - 3].
    guard rest.count > 19, let flags = UInt64(rest[9 - 3]), let start = UInt64(rest[22 - 3])
    else { return nil }
    return (rest[0] == "Z" || rest[0] == "X", flags, start)
  }

  /// A fatal signal sent to the group is added to the shared pending set before any
  /// thread has died: a process in that state is already lost.
  private static func killPending(_ status: String) -> Bool {
    guard let value = statusLine("ShdPnd:", in: status),
      let mask = UInt64(value.trimmed(newlines: false), radix: 16)
    else { return false }
    return mask & (1 << (UInt64(SIGKILL) - 1)) != 0
  }

  /// The state letter (field 3 of stat) of thread `tid` of `pid`; nil when it is gone.
  public static func threadState(_ tid: Int32, in pid: Int32) -> Character? {
    guard let stat = ProcFile.read("/proc/\(pid)/task/\(tid)/stat"),
      let close = stat.lastIndex(of: ")")
    else { return nil }
    return stat[stat.index(after: close)...].first { $0 != " " }
  }

  /// Where the files of `pid` that its threads share are read (see `directory`).
  public static func directory(of pid: Int32) -> String {
    guard let state = threadState(pid, in: pid), state == "Z" || state == "X" else { return "/proc/\(pid)" }
    return (try? inspect(pid))?.directory ?? "/proc/\(pid)"
  }

  /// A thread of `pid` that waits in the kernel for its vfork child (state D inside
  /// vfork, or clone/clone3, which posix_spawn uses with CLONE_VFORK): it stops for
  /// nobody until the child execs or exits.
  public static func threadInVfork(of pid: Int32) -> Int32? {
    threadIDs(of: pid).first { isInVfork($0, of: pid) }
  }

  /// Whether thread `tid` of `pid` waits for its vfork child (see `threadInVfork`).
  public static func isInVfork(_ tid: Int32, of pid: Int32) -> Bool {
    let vforkLike = Set([SWP_SYS_CLONE, SWP_SYS_VFORK, SWP_SYS_CLONE3].map { Substring(String($0)) })
    guard threadState(tid, in: pid) == "D",
      let call = ProcFile.read("/proc/\(pid)/task/\(tid)/syscall")?.split(separator: " ").first
    else { return false }
    return vforkLike.contains(call)
  }

  /// Refuses targets that cannot be patched, before anything is attached.
  public func checkPatchable() throws(ProcessError) {
    if isKernelThread { throw .kernelThread(pid: pid) }
    if isZombie { throw .processExited(pid: pid) }
    // Seizing our own threads would fail (EPERM) and say nothing useful.
    if pid == getpid() { throw .ownProcess(pid: pid) }
    if tracerPid != 0 {
      let name =
        ProcFile.read("/proc/\(tracerPid)/comm")?.trimmed() ?? "unknown"
      throw .alreadyTraced(pid: pid, tracer: tracerPid, tracerName: name)
    }
    // Strict mode allows read, write, _exit and sigreturn only: our first mmap would
    // be answered with SIGKILL.
    if seccomp == Self.seccompStrict { throw .seccompStrict(pid: pid) }
  }

  /// `Seccomp:` modes of /proc/PID/status.
  public static let seccompStrict = 1
  public static let seccompFilter = 2

  /// Reads memory of the running process through /proc/PID/mem, without stopping it (as
  /// root, or as a tracer-capable owner); empty when it cannot be read. For pre-flight
  /// checks only: the process may change it right after.
  public func peek(at address: UInt64, count: Int) -> [UInt8] {
    let fd = open(directory + "/mem", O_RDONLY | O_CLOEXEC)
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

  /// True while a process with this pid and start time exists and has not exited (nor
  /// is being killed).
  public static func isAlive(pid: Int32, startTime: UInt64) -> Bool {
    guard let current = try? inspect(pid) else { return false }
    return current.startTime == startTime && !current.isZombie
  }
}

extension TargetProcess {
  /// A pidfd for `pid` (pidfd_open): readable once the process exits, so a watcher
  /// learns of the exit at once instead of polling. Close-on-exec.
  public static func openPidfd(_ pid: Int32) throws(ProcessError) -> Int32 {
    var error: Int32 = 0
    let fd = swp_syscall6(Int(SWP_SYS_PIDFD_OPEN), Int(pid), 0, 0, 0, 0, 0, &error)
    guard fd >= 0 else {
      throw error == ESRCH ? .noSuchProcess(pid: pid) : .permissionDenied(pid: pid, what: "pidfd_open")
    }
    return Int32(fd)
  }

  /// Ids of the owner of a process: real, effective, saved and filesystem uids and
  /// gids from /proc/PID/status, and the owners of its live threads' status files
  /// (root's when the process is not dumpable, e.g. after a set-uid exec or
  /// `prctl(PR_SET_DUMPABLE, 0)`). Not the owner of /proc/PID: the kernel gives
  /// directories the effective uid whatever the dumpability (`task_dump_owner`). Not a
  /// zombie thread's either: with no memory left to say, its files are root's (a main
  /// thread that called `pthread_exit`, measured on 6.18).
  public static func credentials(of pid: Int32) -> (uids: [UInt32], gids: [UInt32], procOwners: [UInt32])? {
    guard let status = ProcFile.read("/proc/\(pid)/status") else { return nil }
    let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []
    var owners: [UInt32] = []
    for path in tasks.map({ "/proc/\(pid)/task/\($0)/status" }) {
      guard let task = ProcFile.read(path),
        let state = statusLine("State:", in: task)?.drop(while: { $0 == "\t" || $0 == " " }).first,
        state != "Z", state != "X"
      else { continue }
      var info = stat()
      if stat(path, &info) == 0, !owners.contains(info.st_uid) { owners.append(info.st_uid) }
    }
    guard !owners.isEmpty else { return nil }
    return (statusField("Uid:", in: status), statusField("Gid:", in: status), owners)
  }

  /// The numbers of one line of /proc/PID/status (`Uid:`, `Gid:`, `TracerPid:`).
  static func statusField(_ key: String, in status: String) -> [UInt32] {
    guard let value = statusLine(key, in: status) else { return [] }
    return value.split(whereSeparator: { $0 == "\t" || $0 == " " }).compactMap { UInt32($0) }
  }

  /// What follows `key` on the line of /proc/PID/status that starts with it. Found on
  /// the bytes, without splitting the file into lines: the registry looks at every
  /// target's status on every operation (`isAlive`), so with N targets an `--all-of`
  /// over N processes does this N² times, and splitting was half the daemon's time.
  static func statusLine(_ key: String, in status: String) -> Substring? {
    let bytes = status.utf8
    let prefix = Array(key.utf8)
    var start = bytes.startIndex
    while start < bytes.endIndex {
      let end = bytes[start...].firstIndex(of: UInt8(ascii: "\n")) ?? bytes.endIndex
      if bytes[start..<end].starts(with: prefix) {
        return status[bytes.index(start, offsetBy: prefix.count)..<end]
      }
      start = end == bytes.endIndex ? end : bytes.index(after: end)
    }
    return nil
  }
}
