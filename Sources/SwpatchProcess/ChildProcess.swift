import CSwpatchShim
import FoundationEssentials
import Glibc
import SystemPackage

/// Starts a child process the way every part of swpatch needs it: an empty signal mask
/// and default signal dispositions (a parent's blocked SIGTERM, such as a test runner's,
/// must not make the child unstoppable), and no descriptor beyond 0, 1 and 2 (a pipe
/// held open by a long-lived child would keep its reader from ever seeing EOF).
public enum ChildProcess {
  /// Where one of the child's standard descriptors comes from.
  public enum Stream: Sendable {
    case null
    /// A file opened for writing (truncated, or appended to).
    case file(String, append: Bool)
    /// A descriptor of ours, duplicated into the child.
    case descriptor(Int32)
    /// stderr only: the same as stdout.
    case stdout
  }

  /// Spawns `path args...` with the environment `environment` merged over ours, in a
  /// session of its own when `newSession`; returns its pid.
  public static func spawn(
    _ path: String, _ args: [String], environment: [String: String] = [:], stdin: Stream = .null,
    stdout: Stream = .null, stderr: Stream = .stdout, newSession: Bool = false
  ) throws(ProcessError) -> pid_t {
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    for (fd, stream) in [(Int32(0), stdin), (1, stdout), (2, stderr)] {
      switch stream {
      case .null:
        posix_spawn_file_actions_addopen(&actions, fd, "/dev/null", fd == 0 ? O_RDONLY : O_WRONLY, 0)
      case .file(let file, let append):
        let flags = O_WRONLY | O_CREAT | (append ? O_APPEND : O_TRUNC)
        posix_spawn_file_actions_addopen(&actions, fd, file, flags, 0o600)
      case .descriptor(let source):
        posix_spawn_file_actions_adddup2(&actions, source, fd)
      case .stdout:
        posix_spawn_file_actions_adddup2(&actions, 1, fd)
      }
    }
    swp_spawn_addclosefrom(&actions, 3)
    var attributes = posix_spawnattr_t()
    posix_spawnattr_init(&attributes)
    defer { posix_spawnattr_destroy(&attributes) }
    var empty = sigset_t()
    sigemptyset(&empty)
    var all = sigset_t()
    sigfillset(&all)
    posix_spawnattr_setsigmask(&attributes, &empty)
    posix_spawnattr_setsigdefault(&attributes, &all)
    let setsid = Int32(swp_posix_spawn_setsid())
    let flags = POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | (newSession ? setsid : 0)
    posix_spawnattr_setflags(&attributes, Int16(flags))
    var merged = ProcessInfo.processInfo.environment
    merged.merge(environment) { $1 }
    let argv = ([path] + args).map { strdup($0) } + [nil]
    let envp = merged.map { strdup("\($0.key)=\($0.value)") } + [nil]
    defer { (argv + envp).forEach { free($0) } }
    var pid: pid_t = 0
    let rc = posix_spawn(&pid, path, &actions, &attributes, argv, envp)
    guard rc == 0 else { throw .cannotStart(path: path, errno: Errno(rawValue: rc)) }
    return pid
  }
}

extension ChildProcess {
  /// The exit code of `pid`, a child of ours, once it has exited (reaping it), else nil:
  /// its exit status, or 128 + the signal that killed it.
  public static func exitStatus(_ pid: pid_t) -> Int32? {
    var status: Int32 = 0
    let r = waitpid(pid, &status, WNOHANG)
    if r == pid { return exitCode(status) }
    return r < 0 && errno == ECHILD ? 0 : nil
  }

  /// SIGTERM, then SIGKILL after `grace` seconds; always reaps. For long-lived children.
  public static func stop(_ pid: pid_t, grace: Double = 3) {
    kill(pid, SIGTERM)
    let deadline = ContinuousClock.now + .milliseconds(Int(grace * 1000))
    while ContinuousClock.now < deadline {
      if exitStatus(pid) != nil { return }
      usleep(2000)
    }
    kill(pid, SIGKILL)
    _ = reap(pid)
  }

  /// Blocks until `pid` has exited, without reaping it: until it is reaped, its pid
  /// cannot be given to another process, so a watchdog may still signal it safely.
  public static func waitUntilExited(_ pid: pid_t) {
    var info = siginfo_t()
    while waitid(P_PID, id_t(pid), &info, WEXITED | WNOWAIT) != 0 && errno == EINTR {}
  }

  /// Waits for `pid` and reaps it: its exit code and what it used.
  public static func reap(_ pid: pid_t) -> (code: Int32, usage: rusage) {
    var status: Int32 = 0
    var usage = rusage()
    while wait4(pid, &status, 0, &usage) < 0 && errno == EINTR {}
    return (exitCode(status), usage)
  }

  /// A wait status as one number: the exit status, or 128 + the signal number.
  public static func exitCode(_ status: Int32) -> Int32 {
    let signal = status & 0x7f
    return signal == 0 ? (status >> 8) & 0xff : 128 + signal
  }
}
