import FoundationEssentials
import Glibc
import SwpatchBase
import SwpatchProcess
import SwpatchRegistry
import SwpatchState

/// The registry on disk: `registry.json` in the state directory, replaced atomically
/// (temporary file, rename) after every change and guarded by an exclusive
/// `flock`, so two commands at once cannot lose each other's changes.
public final class RegistryStore: Sendable {
  public let state: StateDirectory
  public var registryPath: String { state.registry }

  public init(directory: String) {
    state = StateDirectory(directory)
  }

  /// A locked view of the registry; `save` persists a target's new state.
  public final class Session {
    public private(set) var registry: RegistryState
    /// Targets dropped on load because their process exited (pid + start time gone) or
    /// ran `execve` (another program image).
    public let dropped: [TargetID]
    fileprivate let store: RegistryStore

    fileprivate init(registry: RegistryState, dropped: [TargetID], store: RegistryStore) {
      self.registry = registry
      self.dropped = dropped
      self.store = store
    }

    /// Persists the registry with `target`'s new state in place of its old one.
    public func save(_ target: TargetState) throws(StoreError) {
      var next = registry
      next.upsert(target)
      try store.write(next)
      registry = next
    }
  }

  /// Runs `body` holding the lock, with exited targets already dropped and persisted.
  public func locked<T>(_ body: (Session) throws -> T) throws -> T {
    try ensureDirectory()
    let lockPath = state.registryLock
    let fd = open(lockPath, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
    guard fd >= 0 else { throw StoreError.io(path: lockPath, reason: String(cString: strerror(errno))) }
    defer { close(fd) }
    while flock(fd, LOCK_EX) != 0 {
      guard errno == EINTR else {
        throw StoreError.io(path: lockPath, reason: String(cString: strerror(errno)))
      }
    }
    var registry = try read()
    var dropped: [TargetID] = []
    for target in registry.targets where Self.staleness(of: target) != nil {
      _ = registry.remove(target.id)
      dropped.append(target.id)
    }
    if !dropped.isEmpty { try write(registry) }
    return try body(Session(registry: registry, dropped: dropped, store: self))
  }

  /// The registry as last persisted, read without the lock (every write is an atomic
  /// rename, so this never sees half a file), minus targets that have exited or run
  /// `execve`. For readers that must not wait behind a running operation.
  public func snapshot() throws(StoreError) -> RegistryState {
    try liveSnapshot().registry
  }

  /// `snapshot()`, and which of the entries it left out belong to a process that still
  /// runs but now runs another program (what a watcher must drop, since no pidfd says
  /// so). One read of the file and one look at each process.
  public func liveSnapshot() throws(StoreError) -> (registry: RegistryState, replaced: [TargetID]) {
    var registry = try read()
    var replaced: [TargetID] = []
    for target in registry.targets {
      guard let stale = Self.staleness(of: target) else { continue }
      _ = registry.remove(target.id)
      if stale == .replaced { replaced.append(target.id) }
    }
    return (registry, replaced)
  }

  /// Why an entry no longer describes a live process.
  public enum Staleness: Sendable {
    /// The pid and start time are gone.
    case exited
    /// The process runs another program image: `execve` keeps pid and start time but
    /// replaces every mapping, so the entry is as dead as one whose process exited.
    case replaced
  }

  /// Why `target`'s entry no longer describes a live process; nil while it does.
  public static func staleness(of target: TargetState) -> Staleness? {
    guard TargetProcess.isAlive(pid: target.id.pid, startTime: target.id.startTime) else { return .exited }
    guard let recorded = target.execID, let now = execIdentity(of: target.id.pid) else { return nil }
    return now == recorded ? nil : .replaced
  }

  /// The registry's form of `TargetProcess.execID` (hex), nil when it cannot be read.
  public static func execIdentity(of pid: Int32) -> String? {
    TargetProcess.execID(of: pid).map(hexBytes)
  }

  private func ensureDirectory() throws(StoreError) {
    do {
      try state.create()
    } catch {
      throw .io(path: error.path, reason: "cannot create the state directory (\(error.errno))")
    }
  }

  private func read() throws(StoreError) -> RegistryState {
    guard let data = StateFile.read(registryPath) else { return RegistryState() }
    do {
      return try JSONDecoder().decode(RegistryState.self, from: Data(data))
    } catch {
      throw .corrupt(path: registryPath, reason: "\(error)")
    }
  }

  fileprivate func write(_ registry: RegistryState) throws(StoreError) {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    let data: Data
    do { data = try encoder.encode(registry) } catch {
      throw .io(path: registryPath, reason: "cannot encode: \(error)")
    }
    // A reader (or our next start after a crash) sees the old registry or the new one,
    // never half of one. No fsync, deliberately: this runs while the target is stopped,
    // and the registry describes live processes. A crash of swpatch leaves the written
    // file in the page cache; a crash of the machine ends every target, and the next
    // start drops them all anyway.
    do {
      try StateFile.replace(registryPath, with: data)
    } catch {
      throw .io(path: error.path, reason: "\(error.errno)")
    }
  }
}

/// The state directory could not be used.
public enum StoreError: CodedError, Sendable {
  public var code: String { "state_dir" }

  case io(path: String, reason: String)
  case corrupt(path: String, reason: String)

  public var description: String {
    switch self {
    case .io(let path, let reason):
      return "state directory problem at \(path): \(reason) (set SWPATCH_STATE_DIR to a writable folder)"
    case .corrupt(let path, let reason):
      return "registry \(path) is unreadable (\(reason)); move it aside to start afresh"
    }
  }
}
