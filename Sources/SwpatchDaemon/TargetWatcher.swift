import FoundationEssentials
import Glibc
import SwpatchBase
import SwpatchProcess
import SwpatchRegistry

/// Watches patched targets for exit with one pidfd each, polled on a thread of its
/// own, so an exit is noticed at once rather than at the next request.
/// A pidfd polls readable once the whole thread group has exited, not when only the
/// main thread has (pthread_exit): that process is alive and stays watched.
final class TargetWatcher: @unchecked Sendable {
  private let lock = Lock()
  private var watched: [Int32: (fd: Int32, id: TargetID)] = [:]
  /// Written to wake the poll when the set changes.
  private var wake: [Int32] = [-1, -1]
  private let onExit: @Sendable (TargetID) -> Void

  init(onExit: @escaping @Sendable (TargetID) -> Void) {
    self.onExit = onExit
    _ = pipe(&wake)
    for fd in wake {
      _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
      _ = fcntl(fd, F_SETFL, O_NONBLOCK)
    }
    OSThread.start(name: "swpatchd-watcher") { [unowned self] in self.loop() }
  }

  /// Starts watching `id` (once per target); reports it at once if it is already gone.
  func watch(_ id: TargetID) {
    lock.lock()
    let known = watched[id.pid]?.id == id
    lock.unlock()
    guard !known else { return }
    guard let fd = try? TargetProcess.openPidfd(id.pid) else { return onExit(id) }
    // The pid may have been reused between the registry's record and pidfd_open.
    guard TargetProcess.isAlive(pid: id.pid, startTime: id.startTime) else {
      close(fd)
      return onExit(id)
    }
    lock.lock()
    if let old = watched.updateValue((fd, id), forKey: id.pid) { close(old.fd) }
    lock.unlock()
    var byte: UInt8 = 1
    _ = write(wake[1], &byte, 1)
  }

  private func loop() {
    while true {
      lock.lock()
      let entries = Array(watched.values)
      lock.unlock()
      var fds = [pollfd(fd: wake[0], events: Int16(POLLIN), revents: 0)]
      fds += entries.map { pollfd(fd: $0.fd, events: Int16(POLLIN), revents: 0) }
      guard poll(&fds, nfds_t(fds.count), -1) > 0 else { continue }
      if fds[0].revents != 0 {
        var sink = [UInt8](repeating: 0, count: 64)
        while read(wake[0], &sink, sink.count) > 0 {}
      }
      for (i, entry) in entries.enumerated() where fds[i + 1].revents != 0 {
        lock.lock()
        if watched[entry.id.pid]?.fd == entry.fd { watched[entry.id.pid] = nil }
        lock.unlock()
        close(entry.fd)
        onExit(entry.id)
      }
    }
  }
}
