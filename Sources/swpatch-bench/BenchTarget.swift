import Foundation
import Glibc

/// A running `bench-target` (Fixtures/bench-target.c) and its control block: a file
/// both processes map, through which the target reports, from its own point of view,
/// how long a patcher held its busy thread and how fast the patched call runs.
final class BenchTarget {
  /// Word offsets of `struct control` in bench-target.c.
  private enum Word: Int {
    case ready = 0, mode, epoch, seenEpoch, maxGapNs, iterations, windows, error
  }
  private static let windows = 64
  private static let patchedRateOffset = 64
  private static let directRateOffset = patchedRateOffset + windows * 8
  private static let size = directRateOffset + windows * 8

  enum Mode: UInt64 {
    case nap = 0, probe = 1, rate = 2
  }

  let pid: pid_t
  let threads: Int
  private let control: UnsafeMutableRawPointer
  /// Set once the target's exit has been reaped: its pid may then belong to another process.
  private var reaped = false
  private var stopped = false
  /// How the target ended, once it was found to have exited on its own.
  private var exitCode: Int32?

  private init(pid: pid_t, threads: Int, control: UnsafeMutableRawPointer) {
    self.pid = pid
    self.threads = threads
    self.control = control
  }

  /// Starts the target with `threads` threads and waits until all of them run.
  static func start(
    _ env: BenchEnvironment, threads: Int, library: String, preload: [String] = []
  ) throws -> BenchTarget {
    let path = env.scratch + "/control-\(UUID().uuidString.prefix(8))"
    let fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
    guard fd >= 0, ftruncate(fd, off_t(size)) == 0,
      let map = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), map != MAP_FAILED
    else { throw BenchError("cannot map the control file \(path)") }
    close(fd)
    let (pid, _) = try Child.spawn(
      env.fixture("bench-target"), [path, "\(threads)", library] + preload, env: [:],
      stderrFile: path + ".err")
    Leftovers.shared.add(target: pid)
    let target = BenchTarget(pid: pid, threads: threads, control: map)
    let deadline = ContinuousClock.now + .seconds(30)
    while target.word(.ready) != UInt64(pid) {
      guard ContinuousClock.now < deadline, target.isRunning else {
        let reason = (try? String(contentsOfFile: path + ".err", encoding: .utf8)) ?? ""
        target.stop()
        throw BenchError("bench-target did not start: \(reason.prefix(200))")
      }
      usleep(1000)
    }
    return target
  }

  /// Stops the target (SIGTERM, then SIGKILL) and unmaps the control block.
  func stop() {
    guard !stopped else { return }
    stopped = true
    if !reaped { Child.stop(pid) }
    reaped = true
    Leftovers.shared.remove(target: pid)
    munmap(control, Self.size)
  }

  var mode: Mode {
    get { Mode(rawValue: word(.mode)) ?? .nap }
    set { setWord(.mode, newValue.rawValue) }
  }

  /// Starts a gap measurement: the busy thread spins and acknowledges a new epoch.
  func beginGap() throws {
    if mode != .probe { mode = .probe }
    let epoch = word(.epoch) + 1
    setWord(.epoch, epoch)
    try waitFor("the busy thread to start a gap measurement") { word(.seenEpoch) == epoch }
  }

  /// The longest gap between two busy-loop iterations since `beginGap`. It is known only
  /// once the busy thread runs again, so this waits for a few more iterations first.
  func endGap() throws -> Duration {
    let seen = word(.iterations)
    try waitFor("the busy thread to run after the operation") { word(.iterations) > seen + 2 }
    return .nanoseconds(Int64(word(.maxGapNs)))
  }

  /// Calls per second through bench_f0 and of the replacement called directly, over
  /// `count` pairs of adjacent 40 ms windows (after `skip` warm-up pairs).
  func rates(count: Int, skip: Int = 2) throws -> [(patched: Double, direct: Double)] {
    mode = .rate
    defer { mode = .nap }
    let first = word(.windows) + UInt64(skip)
    let want = first + UInt64(count)
    try waitFor("rate windows", timeout: Double(count + skip) * 0.5 + 10) {
      word(.windows) >= want || word(.error) != 0
    }
    guard word(.error) == 0 else { throw BenchError("bench-target could not load its library") }
    let last = word(.windows)
    return (max(first, last - UInt64(count))..<last).map { w in
      let slot = Int(w % UInt64(Self.windows)) * 8
      return (
        patched: control.load(fromByteOffset: Self.patchedRateOffset + slot, as: Double.self),
        direct: control.load(fromByteOffset: Self.directRateOffset + slot, as: Double.self)
      )
    }
  }

  private func waitFor(_ what: String, timeout: Double = 10, _ done: () -> Bool) throws {
    let deadline = ContinuousClock.now + .milliseconds(Int(timeout * 1000))
    // usleep is an opaque call, so every pass reloads the shared words.
    while !done() {
      guard ContinuousClock.now < deadline else { throw BenchError("timed out waiting for \(what)") }
      guard isRunning else {
        let how = exitCode.map { Child.describe(exitCode: $0) } ?? "exited"
        throw BenchError("bench-target \(pid) \(how) while waiting for \(what)")
      }
      usleep(50)
    }
  }

  private var isRunning: Bool {
    if !reaped, let code = Child.exitStatus(pid) {
      exitCode = code
      reaped = true
      Leftovers.shared.remove(target: pid)
    }
    return !reaped
  }

  private func word(_ w: Word) -> UInt64 {
    control.load(fromByteOffset: w.rawValue * 8, as: UInt64.self)
  }

  private func setWord(_ w: Word, _ value: UInt64) {
    control.storeBytes(of: value, toByteOffset: w.rawValue * 8, as: UInt64.self)
  }
}
