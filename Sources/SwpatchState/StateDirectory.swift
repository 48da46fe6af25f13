import Glibc
import SwpatchBase
import SystemPackage

/// The daemon's state directory (`/var/lib/swpatch`, `SWPATCH_STATE_DIR`, `--state-dir`):
/// every path in it and how it is written. Nothing else builds a path there.
///
/// ```
/// registry.json     the registry, replaced atomically     (RegistryStore)
/// registry.lock     flock of one operation at a time      (RegistryStore)
/// journal/PID-START.log  undo journal of an operation     (UndoJournal)
/// libraries/SHA.so  content-addressed patch libraries     (LibraryStore)
/// audit.log         one JSON line per request             (AuditLog)
/// rules.json        rules for new processes (--all-of)    (RuleBook)
/// swpatchd.lock     one daemon per state directory        (DaemonServer)
/// swpatchd.pid      the daemon's pid                      (DaemonServer)
/// swpatchd.log      an auto-started daemon's output       (DaemonClient)
/// ```
///
/// Everything is root's and private: the directory and its folders are 0700, files 0600.
public struct StateDirectory: Sendable, Equatable {
  public let path: String

  public init(_ path: String) {
    self.path = path
  }

  /// `explicit`, else `SWPATCH_STATE_DIR`, else /var/lib/swpatch.
  public static func resolve(explicit: String? = nil) -> StateDirectory {
    StateDirectory(explicit ?? environment("SWPATCH_STATE_DIR") ?? "/var/lib/swpatch")
  }

  public var registry: String { path + "/registry.json" }
  public var registryLock: String { path + "/registry.lock" }
  public var journals: String { path + "/journal" }
  public func journal(pid: Int32, startTime: UInt64) -> String { journals + "/\(pid)-\(startTime).log" }
  public var libraries: String { path + "/libraries" }
  public func library(sha256: String) -> String { libraries + "/" + sha256 + ".so" }
  /// Where a library being admitted is written before it has a name (its hash).
  public func newLibraryTemporary() -> String {
    libraries + "/.admit-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).tmp"
  }
  /// Libraries a daemon that died while admitting left half-written.
  public func libraryLeftovers() -> [String] {
    guard let folder = opendir(libraries) else { return [] }
    defer { closedir(folder) }
    var found: [String] = []
    while let entry = readdir(folder) {
      let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
        String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
      }
      if name.hasPrefix(".admit-") && name.hasSuffix(".tmp") { found.append(libraries + "/" + name) }
    }
    return found
  }
  public var auditLog: String { path + "/audit.log" }
  /// The rules `attach --all-of` records, replaced atomically.
  public var rules: String { path + "/rules.json" }
  public var daemonLock: String { path + "/swpatchd.lock" }
  public var pidFile: String { path + "/swpatchd.pid" }
  public var daemonLog: String { path + "/swpatchd.log" }

  /// Creates the directory (and `folder` inside it, if given) as 0700 when missing.
  public func create(_ folder: String? = nil) throws(StateFileError) {
    try Self.makeFolder(path)
    if let folder { try Self.makeFolder(folder) }
  }

  private static func makeFolder(_ path: String) throws(StateFileError) {
    var parent = ""
    for part in path.split(separator: "/") {
      parent += "/" + part
      if mkdir(parent, 0o700) != 0 && errno != EEXIST {
        throw StateFileError(path: parent, errno: Errno(rawValue: errno))
      }
    }
  }
}

/// The daemon's socket (`/run/swpatch/swpatchd.sock`, `SWPATCH_SOCKET`, `--socket`) and
/// the lock file beside it that makes one daemon per socket.
public struct SocketLocation: Sendable, Equatable {
  public let path: String

  public init(_ path: String) {
    self.path = path
  }

  /// `explicit`, else `SWPATCH_SOCKET`, else /run/swpatch/swpatchd.sock.
  public static func resolve(explicit: String? = nil) -> SocketLocation {
    SocketLocation(explicit ?? environment("SWPATCH_SOCKET") ?? "/run/swpatch/swpatchd.sock")
  }

  public var lock: String { path + ".lock" }
  /// The folder that holds the socket: it must be writable by root only.
  public var directory: String {
    guard let slash = path.lastIndex(of: "/") else { return "." }
    return slash == path.startIndex ? "/" : String(path[..<slash])
  }
}

/// A file of the state directory that could not be written or read.
public struct StateFileError: CodedError, Sendable {
  public var code: String { "state_dir" }

  public let path: String
  public let errno: Errno

  public init(path: String, errno: Errno) {
    self.path = path
    self.errno = errno
  }

  public var description: String { "\(path): \(errno)" }
}

/// The two ways a state file is written.
public enum StateFile {
  /// Replaces `path` with `bytes` so that a reader, or the next start after a crash, sees
  /// the old file or the new one, never half of one: a temporary file beside it, then a
  /// rename. No fsync: the registry describes live processes, and a crash of the machine
  /// ends them all (see RegistryStore).
  public static func replace(_ path: String, with bytes: some Collection<UInt8>, mode: mode_t = 0o600)
    throws(StateFileError)
  {
    let temporary = path + ".tmp"
    do {
      let fd = try FileDescriptor.open(
        FilePath(temporary), .writeOnly, options: [.create, .truncate, .closeOnExec],
        permissions: FilePermissions(rawValue: mode))
      try fd.closeAfter { _ = try fd.writeAll(bytes) }
    } catch let errno as Errno {
      throw StateFileError(path: temporary, errno: errno)
    } catch {
      throw StateFileError(path: temporary, errno: .ioError)
    }
    guard rename(temporary, path) == 0 else {
      throw StateFileError(path: path, errno: Errno(rawValue: errno))
    }
  }

  /// Opens `path` for appending whole lines: each `write` of an O_APPEND descriptor
  /// lands at the end in one piece, so concurrent writers and a crash leave at most a
  /// torn last line, which readers skip.
  public static func openForAppending(_ path: String, truncate: Bool = false) throws(StateFileError)
    -> FileDescriptor
  {
    var options: FileDescriptor.OpenOptions = [.create, .append, .closeOnExec]
    if truncate { options.insert(.truncate) }
    do {
      return try FileDescriptor.open(
        FilePath(path), .writeOnly, options: options, permissions: FilePermissions(rawValue: 0o600))
    } catch let errno as Errno {
      throw StateFileError(path: path, errno: errno)
    } catch {
      throw StateFileError(path: path, errno: .ioError)
    }
  }

  /// Appends `line` (its newline included) to `fd` with one write.
  public static func append(_ line: some Collection<UInt8>, to fd: FileDescriptor, path: String)
    throws(StateFileError)
  {
    do {
      let written = try fd.writeAll(line)
      guard written == line.count else { throw StateFileError(path: path, errno: .ioError) }
    } catch let error as StateFileError {
      throw error
    } catch let errno as Errno {
      throw StateFileError(path: path, errno: errno)
    } catch {
      throw StateFileError(path: path, errno: .ioError)
    }
  }

  /// Appends one line to `path`, opening and closing it around the write.
  public static func appendLine(_ line: some Collection<UInt8>, to path: String) throws(StateFileError) {
    let fd = try openForAppending(path)
    defer { try? fd.close() }
    try append(line, to: fd, path: path)
  }

  /// The whole contents of `path`; nil when it does not exist or cannot be read.
  public static func read(_ path: String) -> [UInt8]? {
    guard let fd = try? FileDescriptor.open(FilePath(path), .readOnly, options: [.closeOnExec]) else {
      return nil
    }
    defer { try? fd.close() }
    var data: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
      guard let n = try? chunk.withUnsafeMutableBytes({ try fd.read(into: $0) }) else { return nil }
      if n == 0 { return data }
      data += chunk[0..<n]
    }
  }
}

private func environment(_ name: String) -> String? {
  getenv(name).map { String(cString: $0) }
}
