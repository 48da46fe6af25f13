import SwpatchBase

/// One dedicated OS thread that issues every ptrace request.
///
/// Linux binds a tracee to the tracer *thread* that attached it: requests from any other
/// thread fail with ESRCH. Swift concurrency and Dispatch hop threads, so all ptrace work
/// for a target is funnelled through one of these.
public final class TracerThread: @unchecked Sendable {
  private let condition = Condition()
  private var jobs: [() -> Void] = []
  private var started = false
  private let name: String

  /// The process's tracer thread. One is enough: every target is driven from it, one
  /// operation at a time, which is also what keeps two stops from interleaving.
  public static let shared = TracerThread(name: "swpatch-tracer")

  public init(name: String) {
    self.name = name
  }

  /// Started on first use; the thread holds its owner for the life of the process.
  private func startIfNeeded() {
    guard !started else { return }
    started = true
    OSThread.start(name: name, stackSize: 1 << 20) { self.loop() }
  }

  private func loop() {
    while true {
      condition.lock()
      while jobs.isEmpty {
        // A thread we seized but could not detach is let go as soon as it stops.
        guard StoppedTarget.hasStrays else {
          condition.wait()
          continue
        }
        condition.unlock()
        StoppedTarget.releaseStrays()
        condition.lock()
        if jobs.isEmpty { condition.wait(timeout: .milliseconds(10)) }
      }
      let job = jobs.removeFirst()
      condition.unlock()
      job()
    }
  }

  /// Runs `body` on the tracer thread and waits for its result.
  public func run<T>(_ body: @escaping () throws -> T) throws -> T {
    let done = Condition()
    nonisolated(unsafe) var result: Result<T, Error>?
    let job: () -> Void = {
      let r = Result { try body() }
      done.lock()
      result = r
      done.signal()
      done.unlock()
    }
    condition.lock()
    startIfNeeded()
    jobs.append(job)
    condition.signal()
    condition.unlock()
    done.lock()
    while result == nil { done.wait() }
    done.unlock()
    return try result!.get()
  }
}

extension TracerThread {
  /// Runs `body` on the tracer thread with every thread of `pid` held stopped, and
  /// resumes the target when `body` returns or throws. The only way to hold a target:
  /// a target left stopped (or stopped from another thread) would hang or kill it, and
  /// the target handed to `body` is unusable once the scope ends.
  public func withStopped<T>(_ pid: Int32, _ body: @escaping (StoppedTarget) throws -> T) throws -> T {
    try withStoppedMeasured(pid, body).value
  }

  /// `withStopped`, also returning how long the target was held (see
  /// `StoppedTarget.stoppedFor`), which is known only once it has been resumed.
  public func withStoppedMeasured<T>(
    _ pid: Int32, _ body: @escaping (StoppedTarget) throws -> T
  ) throws -> (value: T, stoppedFor: Duration) {
    // `body` escapes only in name: `run` waits for it. (withoutActuallyEscaping would
    // trap, as the tracer thread may still hold the finished job when `run` returns.)
    try run {
      let target = try StoppedTarget.stop(pid: pid)
      defer { target.resume() }
      let value = try body(target)
      target.resume()
      return (value, target.stoppedFor)
    }
  }
}
