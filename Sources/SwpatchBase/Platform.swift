import Glibc

// The few operating-system tools swpatch took from Foundation, on Glibc alone: linking
// Foundation maps its 40 MB ICU data library into every `swpatch` start (issue 16), while
// FoundationEssentials (JSON, Data, Date, URL, FileManager) does not.

/// A mutual-exclusion lock (pthread mutex), for state shared between threads.
public final class Lock: @unchecked Sendable {
  fileprivate let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)

  public init() {
    mutex.initialize(to: pthread_mutex_t())
    pthread_mutex_init(mutex, nil)
  }

  deinit {
    pthread_mutex_destroy(mutex)
    mutex.deallocate()
  }

  public func lock() { pthread_mutex_lock(mutex) }
  public func unlock() { pthread_mutex_unlock(mutex) }

  public func withLock<T>(_ body: () throws -> T) rethrows -> T {
    lock()
    defer { unlock() }
    return try body()
  }
}

/// A lock with a condition variable: `wait` releases the lock until `signal`.
public final class Condition: @unchecked Sendable {
  private let guardLock = Lock()
  private let condition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)

  public init() {
    condition.initialize(to: pthread_cond_t())
    // Timed waits count on the monotonic clock: a wall-clock step must not stretch them.
    var attributes = pthread_condattr_t()
    pthread_condattr_init(&attributes)
    pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC)
    pthread_cond_init(condition, &attributes)
    pthread_condattr_destroy(&attributes)
  }

  deinit {
    pthread_cond_destroy(condition)
    condition.deallocate()
  }

  public func lock() { guardLock.lock() }
  public func unlock() { guardLock.unlock() }
  public func signal() { pthread_cond_signal(condition) }
  public func broadcast() { pthread_cond_broadcast(condition) }

  /// Waits for a signal; call with the lock held.
  public func wait() { pthread_cond_wait(condition, guardLock.mutex) }

  /// Waits for a signal or `timeout`; call with the lock held. False when it timed out.
  @discardableResult
  public func wait(timeout: Duration) -> Bool {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    let (seconds, attoseconds) = timeout.components
    var nanoseconds = Int(now.tv_nsec) + Int(attoseconds / 1_000_000_000)
    var deadline = timespec(tv_sec: now.tv_sec + Int(seconds) + nanoseconds / 1_000_000_000, tv_nsec: 0)
    nanoseconds %= 1_000_000_000
    deadline.tv_nsec = nanoseconds
    return pthread_cond_timedwait(condition, guardLock.mutex, &deadline) == 0
  }
}

/// Writes `text` to standard error, unbuffered.
public func writeToStandardError(_ text: String) {
  var bytes = Array(text.utf8)[...]
  while !bytes.isEmpty {
    let written = bytes.withUnsafeBytes { Glibc.write(2, $0.baseAddress, $0.count) }
    if written < 0 && errno == EINTR { continue }
    guard written > 0 else { return }
    bytes = bytes.dropFirst(written)
  }
}

/// Path arithmetic on strings, with the meaning NSString gave it.
public enum PathText {
  /// The last component: `/a/b.so` -> `b.so`; `/a/b/` -> `b`; `/` -> `/`.
  public static func lastComponent(_ path: String) -> String {
    var trimmed = Substring(path)
    while trimmed.count > 1 && trimmed.hasSuffix("/") { trimmed = trimmed.dropLast() }
    if trimmed == "/" { return "/" }
    guard let slash = trimmed.lastIndex(of: "/") else { return String(trimmed) }
    return String(trimmed[trimmed.index(after: slash)...])
  }

  /// The folder: `/a/b.so` -> `/a`; `/b` -> `/`; `b` -> ``.
  public static func deletingLastComponent(_ path: String) -> String {
    var trimmed = Substring(path)
    while trimmed.count > 1 && trimmed.hasSuffix("/") { trimmed = trimmed.dropLast() }
    guard let slash = trimmed.lastIndex(of: "/") else { return "" }
    if slash == trimmed.startIndex { return "/" }
    var folder = trimmed[..<slash]
    while folder.count > 1 && folder.hasSuffix("/") { folder = folder.dropLast() }
    return String(folder)
  }

  /// `folder` joined with `name` by one slash.
  public static func appending(_ folder: String, _ name: String) -> String {
    if folder.isEmpty { return name }
    if name.isEmpty { return folder }
    return (folder.hasSuffix("/") ? String(folder.dropLast()) : folder) + "/"
      + (name.hasPrefix("/") ? String(name.dropFirst()) : name)
  }

  /// The path with every symbolic link resolved (realpath); `path` itself when it does
  /// not exist.
  public static func resolvingSymlinks(_ path: String) -> String {
    guard let resolved = realpath(path, nil) else { return path }
    defer { free(resolved) }
    return String(cString: resolved)
  }
}

extension StringProtocol {
  /// The string without leading and trailing spaces, tabs and (with `newlines`) line ends.
  public func trimmed(newlines: Bool = true) -> String {
    let drop: (Character) -> Bool = { $0 == " " || $0 == "\t" || (newlines && $0.isNewline) }
    guard let first = firstIndex(where: { !drop($0) }) else { return "" }
    let last = lastIndex(where: { !drop($0) })!
    return String(self[first...last])
  }

  /// Left-aligned in a column `width` characters wide (never cut).
  public func padded(to width: Int) -> String {
    count >= width ? String(self) : self + String(repeating: " ", count: width - count)
  }
}

/// `value` in lowercase hex, zero-padded to at least `width` digits (`%02x`).
public func hexDigits<T: BinaryInteger>(_ value: T, width: Int) -> String {
  let digits = String(value, radix: 16)
  return digits.count >= width ? digits : String(repeating: "0", count: width - digits.count) + digits
}
