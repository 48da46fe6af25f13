import Dispatch
import FoundationEssentials
import Glibc
import SwpatchBase
import SwpatchPatcher
import SwpatchProcess
import SwpatchProtocol
import SwpatchRegistry
import Synchronization

/// What the daemon does with a request, apart from the socket: authorises it, runs
/// state-changing operations one at a time on the worker queue, records them in the
/// audit log, answers `status` from the persisted registry without waiting, and keeps
/// the registry in step with targets that exit.
public final class DaemonService: @unchecked Sendable {
  public let engine: Engine
  public let audit: AuditLog
  public let stateDirectory: String
  /// Every state-changing operation runs here, in arrival order, one at a time; inside,
  /// every ptrace request runs on the one tracer thread.
  let worker = DispatchQueue(label: "swpatchd.worker")
  private let lock = Lock()
  /// Hooks whose memory did not match the registry, per pid (see Engine.drift).
  private var drift: [Int32: [UInt64: String]] = [:]
  /// Targets dropped because they exited, shown once by the next `status`.
  private var dropped: [Int32] = []
  private var stopping = false
  private var watcher: TargetWatcher?
  /// Looks for targets that ran `execve` or forked (see `watchLineage`).
  private var lineageWatch: (any DispatchSourceTimer)?
  /// The rules for new processes (`attach --all-of`), and the scan that applies them.
  let rules: RuleBook
  var ruleWatch: RuleWatch?
  /// Targets dropped because they ran `execve` and still running, so that their later
  /// exit is not reported a second time.
  private var replaced: Set<TargetID> = []
  /// Live children of patched targets looked at already, adopted or not: each is looked
  /// at once.
  private var lineageSeen: Set<TargetID> = []

  public init(stateDirectory: String) {
    self.stateDirectory = stateDirectory
    // What a `stack` operation waits for goes to the daemon's log (the client gets the
    // outcome, with `retries`, in its one response).
    engine = Engine(stateDirectory: stateDirectory) {
      writeToStandardError("swpatchd: \($0)\n")
    }
    audit = AuditLog(stateDirectory: stateDirectory)
    rules = RuleBook(stateDirectory: stateDirectory)
  }

  // MARK: Start and stop

  /// Loads the registry, drops targets that are gone (audited), watches the rest and
  /// verifies each hook against the target's memory.
  public func start() throws {
    engine.libraries.removeLeftovers()
    watcher = TargetWatcher { [weak self] id in self?.targetExited(id) }
    watchLineage()
    watchRules()
    for (id, message) in engine.recoverInterruptedOperations() {
      audit.append(
        AuditRecord(
          uid: nil, callerPid: nil, pid: id.pid, startTime: id.startTime, operation: "recover",
          patch: nil, result: "ok", message: message))
    }
    let (live, gone) = try engine.store.locked { session in
      (session.registry.targets, session.dropped)
    }
    for id in gone { recordExit(id) }
    for target in live {
      watcher?.watch(target.id)
      verify(target)
    }
  }

  /// Refuses new operations, waits for the one in progress (and those queued, which
  /// are refused), then returns. Patches stay live in the targets.
  public func shutdown() {
    lock.withLock { stopping = true }
    worker.sync {}
  }

  var isStopping: Bool { lock.withLock { stopping } }

  // MARK: Requests

  /// Handles one request line from `peer`; `reply` gets exactly one response line.
  /// A state-changing request still queued when `cancellation` fires is not run: it is
  /// audited as `cancelled` (its client went away and would never see the answer).
  public func handle(
    _ line: Data, peer: PeerCredentials, cancellation: Cancellation = Cancellation(),
    reply: @escaping @Sendable (Data) -> Void
  ) {
    let request: Request
    do {
      request = try Request.decode(line)
    } catch {
      return reply(WireCoding.line(Response<NoResult>.failure(error)))
    }
    switch request.op {
    case .ping:
      reply(
        WireCoding.line(
          Response.success(
            PingResult(pid: getpid(), version: DaemonProtocol.version, stateDir: stateDirectory))))
    case .status:
      reply(respond { try self.status(pid: request.pid, allOf: request.allOf, caller: peer) })
    case .rules:
      reply(
        WireCoding.line(Response.success(rules.statuses(uid: peer.isRoot ? nil : peer.uid))))
    case .log:
      reply(
        WireCoding.line(
          Response.success(audit.records(pid: request.pid, uid: peer.isRoot ? nil : peer.uid))))
    case .attach, .enable, .disable, .remove:
      worker.async {
        guard !cancellation.isCancelled else { return reply(self.cancelled(request, caller: peer)) }
        reply(self.change(request, caller: peer))
      }
    }
  }

  // MARK: status

  private func status(pid: Int32?, allOf: String?, caller: PeerCredentials) throws -> StatusResult {
    if let pid { try TargetProcess.checkIsProcess(pid) }
    let program = try allOf.map { path throws(PatchError) in try ProgramFile.open(path) }
    let registry = try engine.store.snapshot()
    let visible = registry.targets.filter { target in
      (pid == nil || target.id.pid == pid) && (program?.matches(target.id.pid) ?? true)
        // The addresses status shows are what the kernel hides from a user who may not
        // trace the process (a set-uid program they started, one not dumpable).
        && (try? Authorizer.mayChange(pid: target.id.pid, library: nil, caller: caller)) != nil
    }
    var report = StatusReport(targets: visible)
    let (found, exited) = lock.withLock { () -> ([Int32: [UInt64: String]], [Int32]) in
      let shown = dropped.filter { pid == nil || $0 == pid }
      dropped.removeAll { shown.contains($0) }
      return (drift, shown)
    }
    report.mark(drift: found)
    // Each library file is hashed once per answer, however many targets load it.
    var seen: [String: LibraryOnDisk] = [:]
    report.mark { path, sha256 in
      let key = path + "\u{0}" + (sha256 ?? "")
      if let known = seen[key] { return known }
      let state = LibraryStore.onDisk(path: path, sha256: sha256)
      seen[key] = state
      return state
    }
    let ruled = rules.statuses(uid: caller.isRoot ? nil : caller.uid, path: allOf)
    return StatusResult(targets: report.targets, dropped: exited, rules: ruled.isEmpty ? nil : ruled)
  }

  // MARK: attach, enable, disable

  /// Runs one state-changing request on the worker queue and audits it.
  private func change(_ request: Request, caller: PeerCredentials) -> Data {
    if request.allOf != nil { return changeAll(request, caller: caller) }
    switch changeOne(request, caller: caller) {
    case .success(let report): return WireCoding.line(Response.success(report))
    case .failure(let body): return WireCoding.line(Response<NoResult>.failure(body))
    }
  }

  /// One operation on one process, audited (unless it was refused with one of `quiet`,
  /// which a rule uses for "already applied"); `note` goes into the audit record.
  func changeOne(
    _ request: Request, caller: PeerCredentials, note: String? = nil, quiet: Set<String> = []
  ) -> Result<OperationReport, ErrorBody> {
    let pid = request.pid!
    let startTime = try? TargetProcess.inspect(pid).startTime
    var record = AuditRecord(
      uid: caller.uid, callerPid: caller.pid, pid: pid, startTime: startTime,
      operation: request.op.rawValue, patch: request.patchID, result: "ok", message: note,
      options: request.options ?? OperationOptions())
    do {
      guard !isStopping else {
        throw ErrorBody(code: "shutting_down", message: "the daemon is shutting down; retry in a moment")
      }
      let report = try perform(request, caller: caller, record: &record)
      record.stoppedUs = report.stoppedMicroseconds
      record.retries = report.retries
      record.threadsMoved = report.threadsMoved
      record.threadsCaught = report.threadsCaught
      record.transitionUs = report.transitionMicroseconds
      record.result = report.dryRun ? "dry_run" : "ok"
      audit.append(record)
      afterChange(pid: pid)
      return .success(report)
    } catch {
      let body = Self.errorBody(error)
      record.result = "refused"
      record.code = body.code
      record.message = note.map { "\($0): \(body.message)" } ?? body.message
      if !quiet.contains(body.code) { audit.append(record) }
      afterChange(pid: pid)
      return .failure(body)
    }
  }

  /// Audits a queued request whose client went away before it started; nothing ran.
  private func cancelled(_ request: Request, caller: PeerCredentials) -> Data {
    let body = ErrorBody(
      code: "cancelled",
      message: "the client closed its connection before the operation started; nothing was done")
    audit.append(
      AuditRecord(
        uid: caller.uid, callerPid: caller.pid, pid: request.pid ?? 0, startTime: nil,
        operation: request.op.rawValue, patch: request.patchID ?? Self.patchID(in: request),
        result: "cancelled", code: body.code, message: body.message, options: request.options))
    return WireCoding.line(Response<NoResult>.failure(body))
  }

  /// The id in an attach request's patch text, for the audit log; nil when unreadable.
  private static func patchID(in request: Request) -> String? {
    guard let text = request.patch,
      let id = (try? JSONDecoder().decode(PatchIDField.self, from: Data(text.utf8)))?.id
    else { return nil }
    return String(id.prefix(DaemonProtocol.maxPatchIDLength))
  }

  private func perform(
    _ request: Request, caller: PeerCredentials, record: inout AuditRecord
  ) throws -> OperationReport {
    let pid = request.pid!
    let options = request.options ?? OperationOptions()
    switch request.op {
    case .attach:
      let path = request.patchPath!
      let folder = PathText.deletingLastComponent(path)
      let file = try PatchFile.parse(Data(request.patch!.utf8), path: path, folder: folder)
      record.patch = file.id
      try Authorizer.mayChange(pid: pid, library: file.library, caller: caller)
      return try engine.attach(pid: pid, patch: file, policy: request.policy, options: options)
    case .enable:
      try Authorizer.mayChange(pid: pid, library: nil, caller: caller)
      return try engine.enable(pid: pid, patchID: request.patchID!, options: options)
    case .remove:
      try Authorizer.mayChange(pid: pid, library: nil, caller: caller)
      return try engine.remove(pid: pid, patchID: request.patchID!, options: options)
    default:
      try Authorizer.mayChange(pid: pid, library: nil, caller: caller)
      return try engine.disable(pid: pid, patchID: request.patchID!, options: options)
    }
  }

  /// After any operation on `pid`: watch it if it is now patched, and re-verify it.
  private func afterChange(pid: Int32) {
    guard let registry = try? engine.store.snapshot(),
      let target = registry.targets.first(where: { $0.id.pid == pid })
    else { return }
    watcher?.watch(target.id)
    verify(target)
  }

  /// Compares the target's memory with the registry and remembers any drift.
  private func verify(_ target: TargetState) {
    let found = engine.drift(of: target)
    lock.withLock { drift[target.id.pid] = found.isEmpty ? nil : found }
  }

  // MARK: Targets that exit

  private func targetExited(_ id: TargetID) {
    // Dropped already when it ran execve; its exit is not news.
    if lock.withLock({ replaced.remove(id) != nil }) { return }
    recordExit(id)
    persistDrops()
  }

  /// The registry store drops stale targets whenever it is locked: lock it once on the
  /// worker, behind any running operation.
  private func persistDrops() {
    worker.async { [engine] in _ = try? engine.store.locked { _ in } }
  }

  /// Processes change under their entries without a pidfd saying so: four times a
  /// second, a target whose image changed (`execve`) is dropped as if it had exited,
  /// and a child a patched target forked, which runs the same hooks in its copy of the
  /// memory, is adopted as a target of its own. Status already hides an exec'd target
  /// at once; this writes the audit lines and persists the change. One read of the
  /// registry a tick serves both.
  private func watchLineage() {
    let timer = DispatchSource.makeTimerSource(queue: DispatchQueue(label: "swpatchd.lineage-watch"))
    timer.schedule(deadline: .now() + .milliseconds(250), repeating: .milliseconds(250))
    timer.setEventHandler { [weak self] in
      guard let self, let (registry, replaced) = try? engine.store.liveSnapshot() else { return }
      dropReplacedImages(replaced)
      adoptForks(of: registry)
    }
    timer.resume()
    lineageWatch = timer
  }

  private func adoptForks(of registry: RegistryState) {
    var live: Set<TargetID> = []
    for parent in registry.targets where !parent.hooks.isEmpty {
      var fresh: [Int32] = []
      for child in TargetProcess.children(of: parent.id.pid) {
        guard let process = try? TargetProcess.inspect(child) else { continue }
        let id = TargetID(pid: child, startTime: process.startTime)
        live.insert(id)
        if registry.target(id) == nil && lock.withLock({ lineageSeen.insert(id).inserted }) {
          fresh.append(child)
        }
      }
      guard !fresh.isEmpty else { continue }
      worker.async { [self, fresh] in
        guard !isStopping, let adopted = try? engine.adoptForkedChildren(of: parent.id, among: fresh) else {
          return
        }
        for child in adopted {
          audit.append(
            AuditRecord(
              uid: nil, callerPid: nil, pid: child.id.pid, startTime: child.id.startTime, operation: "fork",
              patch: nil, result: "adopted",
              message:
                "forked from patched pid \(parent.id.pid): its hooks and patches are now this process's own"))
          watcher?.watch(child.id)
        }
      }
    }
    // Children that are gone need no memory: the set stays as large as the live ones.
    lock.withLock { lineageSeen.formIntersection(live) }
  }

  private func dropReplacedImages(_ ids: [TargetID]) {
    let fresh = lock.withLock { ids.filter { replaced.insert($0).inserted } }
    for id in fresh {
      // A rule may cover the program it runs now: let the rule scan look at it again.
      ruleWatch?.forget(id.pid)
      recordDrop(
        id, operation: "exec",
        message:
          "the target ran execve: its program image and every hook in it are gone; its registry entries were dropped"
      )
    }
    if !fresh.isEmpty { persistDrops() }
  }

  private func recordExit(_ id: TargetID) {
    recordDrop(id, operation: "exit", message: "the target exited; its registry entries were dropped")
  }

  /// Forgets what is known of a dropped target, names it once in the next `status`, and
  /// audits why it was dropped.
  private func recordDrop(_ id: TargetID, operation: String, message: String) {
    lock.withLock {
      drift[id.pid] = nil
      dropped.append(id.pid)
    }
    audit.append(
      AuditRecord(
        uid: nil, callerPid: nil, pid: id.pid, startTime: id.startTime, operation: operation, patch: nil,
        result: "dropped", message: message))
  }

  // MARK: Errors

  static func errorBody(_ error: any Error) -> ErrorBody {
    if let body = error as? ErrorBody { return body }
    return ErrorBody(code: errorCode(error), message: "\(error)")
  }

  private func respond<T: Codable & Sendable>(_ body: () throws -> T) -> Data {
    do {
      return WireCoding.line(Response.success(try body()))
    } catch {
      return WireCoding.line(Response<NoResult>.failure(Self.errorBody(error)))
    }
  }
}

/// Set once a request's client has gone; read by the worker before it starts the request.
public final class Cancellation: Sendable {
  private let cancelled = Mutex(false)

  public init() {}

  public func cancel() { cancelled.withLock { $0 = true } }
  public var isCancelled: Bool { cancelled.withLock { $0 } }
}

/// The `id` of a patch file's text, nil when absent or not a string.
private struct PatchIDField: Decodable {
  let id: String?
}
