import Foundation

/// One dedicated OS thread that issues every ptrace request.
///
/// Linux binds a tracee to the tracer *thread* that attached it: requests from any other
/// thread fail with ESRCH. Swift concurrency and Dispatch hop threads, so all ptrace work
/// for a target is funnelled through one of these.
public final class TracerThread: @unchecked Sendable {
  private let condition = NSCondition()
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
    let thread = Thread { self.loop() }
    thread.name = name
    thread.stackSize = 1 << 20
    thread.start()
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
        if jobs.isEmpty { _ = condition.wait(until: Date(timeIntervalSinceNow: 0.01)) }
      }
      let job = jobs.removeFirst()
      condition.unlock()
      job()
    }
  }

  /// Runs `body` on the tracer thread and waits for its result.
  public func run<T>(_ body: @escaping () throws -> T) throws -> T {
    let done = NSCondition()
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
