import CSwpatchShim
import Glibc

/// An OS thread of its own (pthread), for work that must stay on one thread (ptrace) or
/// that blocks (watching processes).
public enum OSThread {
  /// Starts `body` on a new detached thread named `name` (at most 15 bytes are kept).
  public static func start(name: String, stackSize: Int = 1 << 20, _ body: @escaping @Sendable () -> Void) {
    final class Box: @unchecked Sendable {
      let body: @Sendable () -> Void
      let name: String
      init(_ body: @escaping @Sendable () -> Void, name: String) {
        self.body = body
        self.name = name
      }
    }
    var attributes = pthread_attr_t()
    pthread_attr_init(&attributes)
    defer { pthread_attr_destroy(&attributes) }
    pthread_attr_setstacksize(&attributes, stackSize)
    pthread_attr_setdetachstate(&attributes, Int32(PTHREAD_CREATE_DETACHED))
    let context = Unmanaged.passRetained(Box(body, name: name)).toOpaque()
    var thread = pthread_t()
    let result = pthread_create(
      &thread, &attributes,
      { raw in
        let box = Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue()
        swp_set_thread_name(String(decoding: box.name.utf8.prefix(15), as: UTF8.self))
        box.body()
        return nil
      }, context)
    precondition(result == 0, "pthread_create failed: \(result)")
  }

  /// Sleeps the calling thread for `duration`.
  public static func sleep(_ duration: Duration) {
    let (seconds, attoseconds) = duration.components
    guard seconds > 0 || attoseconds > 0 else { return }
    var request = timespec(tv_sec: Int(seconds), tv_nsec: Int(attoseconds / 1_000_000_000))
    var left = timespec()
    while nanosleep(&request, &left) == -1 && errno == EINTR { request = left }
  }
}
