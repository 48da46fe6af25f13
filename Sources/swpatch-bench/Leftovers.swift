import Foundation
import Glibc

/// The bench's running targets and the environments whose daemon runs, so that a
/// bench stopped by Ctrl-C, SIGTERM or SIGHUP still stops them: a daemon runs in its
/// own session and would outlive the bench, and so would a target sent no signal.
final class Leftovers: @unchecked Sendable {
  static let shared = Leftovers()
  private let lock = NSLock()
  private var environments: [String: BenchEnvironment] = [:]
  private var targets: Set<pid_t> = []

  func add(_ env: BenchEnvironment) { lock.withLock { environments[env.socket] = env } }
  func remove(_ env: BenchEnvironment) { lock.withLock { environments[env.socket] = nil } }
  func add(target pid: pid_t) { lock.withLock { _ = targets.insert(pid) } }
  func remove(target pid: pid_t) { lock.withLock { _ = targets.remove(pid) } }

  /// Blocks the stopping signals in every thread of the bench (threads made later
  /// inherit the mask; children get an empty mask from `Child.spawn`) and waits for
  /// them on a thread of its own, which stops every target, removes every live
  /// environment (stopping its daemon) and exits.
  /// Call it first, before the bench makes any thread.
  func stopOnInterrupt() {
    var signals = sigset_t()
    sigemptyset(&signals)
    for signal in [SIGINT, SIGTERM, SIGHUP] { sigaddset(&signals, signal) }
    pthread_sigmask(SIG_BLOCK, &signals, nil)
    let waited = signals
    Thread.detachNewThread {
      var set = waited
      var received: Int32 = 0
      sigwait(&set, &received)
      progress("interrupted by signal \(received): stopping the bench's targets and daemons")
      let (pids, environments) = self.lock.withLock { (self.targets, Array(self.environments.values)) }
      for pid in pids { Child.stop(pid) }
      for env in environments { env.cleanUp() }
      exit(128 + received)
    }
  }
}
