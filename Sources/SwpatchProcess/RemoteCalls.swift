import CSwpatchShim
import Glibc
import SystemPackage

/// The system calls and library calls swpatch makes inside a held target, typed: the
/// kernel's numbers and flags stay here, and a failure is a `ProcessError`, never a
/// negative errno handed upward.
extension StoppedTarget {
  /// Maps `length` bytes of anonymous memory, readable and, if `executable`, executable
  /// (never writable: swpatch writes through /proc/PID/mem, so a target under
  /// MemoryDenyWriteExecute can still be patched). With a `hint`, only exactly there
  /// (MAP_FIXED_NOREPLACE): nil when the spot is taken, or when a kernel that ignores
  /// the flag put it elsewhere (that mapping is undone).
  public func mmap(at hint: UInt64?, length: UInt64, executable: Bool) throws(ProcessError) -> UInt64? {
    let protection = UInt64(SWP_PROT_READ) | (executable ? UInt64(SWP_PROT_EXEC) : 0)
    let fixed = hint == nil ? 0 : UInt64(SWP_MAP_FIXED_NOREPLACE)
    let flags = UInt64(SWP_MAP_PRIVATE) | UInt64(SWP_MAP_ANONYMOUS) | fixed
    let noFile = UInt64.max  // fd -1
    let result = try syscall(Int(SWP_SYS_MMAP), [hint ?? 0, length, protection, flags, noFile, 0])
    if hint != nil && result == -Int64(EEXIST) { return nil }
    let base = UInt64(try Self.checked(result, "mmap"))
    if let hint, base != hint {
      try? munmap(base, length: length)
      return nil
    }
    return base
  }

  /// Maps `length` bytes of private anonymous memory that the target may write (not
  /// executable): data that code swpatch put in the target updates itself, such as a
  /// transition's table of unswitched threads.
  public func mapData(length: UInt64) throws(ProcessError) -> UInt64 {
    let protection = UInt64(SWP_PROT_READ) | UInt64(SWP_PROT_WRITE)
    let flags = UInt64(SWP_MAP_PRIVATE) | UInt64(SWP_MAP_ANONYMOUS)
    let result = try syscall(Int(SWP_SYS_MMAP), [0, length, protection, flags, UInt64.max, 0])
    return UInt64(try Self.checked(result, "mmap"))
  }

  /// Unmaps `length` bytes at `address`.
  public func munmap(_ address: UInt64, length: UInt64) throws(ProcessError) {
    try Self.checked(try syscall(Int(SWP_SYS_MUNMAP), [address, length]), "munmap")
  }

  /// A memory file made in the target, close-on-exec (an exec must not inherit it),
  /// named `name` in its /proc/PID/maps; returns the target's descriptor.
  public func memfdCreate(name: String) throws(ProcessError) -> Int32 {
    let result = try syscall(
      Int(SWP_SYS_MEMFD_CREATE), data: Array(name.utf8) + [0], args: { [$0, UInt64(SWP_MFD_CLOEXEC)] })
    return Int32(try Self.checked(result, "memfd_create"))
  }

  /// Closes the target's descriptor `fd`.
  public func close(fd: Int32) throws(ProcessError) {
    try Self.checked(try syscall(Int(SWP_SYS_CLOSE), [UInt64(fd)]), "close")
  }

  /// A raw system call result as a value, or the error it encodes (-4095...-1).
  @discardableResult
  private static func checked(_ result: Int64, _ name: String) throws(ProcessError) -> Int64 {
    guard result < 0 && result >= -4095 else { return result }
    throw .remoteSyscallFailed(name: name, errno: Errno(rawValue: Int32(-result)))
  }

  // MARK: The dynamic loader

  /// Calls `dlopen(path, RTLD_NOW)` at `function` on the main thread; the handle, or
  /// nil when dlopen returned NULL (`dlerror` says why).
  public func dlopen(_ function: UInt64, path: String, timeout: Duration) throws(ProcessError) -> UInt64? {
    let handle = try call(
      function, name: "dlopen", args: { [$0, UInt64(RTLD_NOW)] }, data: Array(path.utf8) + [0],
      timeout: timeout)
    return handle == 0 ? nil : handle
  }

  /// `dlopen` of the file behind the target's own descriptor `fd`, by the path the
  /// target sees it under: /proc/thread-self, since the calling thread may not be the
  /// main thread (which may have exited, leaving /proc/self's fd list empty).
  public func dlopen(_ function: UInt64, descriptor fd: Int32, timeout: Duration) throws(ProcessError)
    -> UInt64?
  {
    try dlopen(function, path: Self.pathsOf(descriptor: fd)[0], timeout: timeout)
  }

  /// The paths under which the target sees its own descriptor `fd`: the one `dlopen`
  /// is given, and the one its loader may print. Messages from the target (dlerror)
  /// name these; the patcher puts the library's own name in their place.
  public static func pathsOf(descriptor fd: Int32) -> [String] {
    ["/proc/thread-self/fd/\(fd)", "/proc/self/fd/\(fd)"]
  }

  /// Calls `dlerror()` at `function`: its message, nil when it has none.
  public func dlerror(_ function: UInt64, timeout: Duration) throws(ProcessError) -> String? {
    let text = try call(function, name: "dlerror", args: { _ in [] }, timeout: timeout)
    return text == 0 ? nil : cString(at: text)
  }

  /// Calls `dlclose(handle)` at `function`.
  public func dlclose(_ function: UInt64, handle: UInt64, timeout: Duration) throws(ProcessError) {
    _ = try call(function, name: "dlclose", args: { _ in [handle] }, timeout: timeout)
  }

  /// The NUL-terminated string at `address`, up to 512 bytes of it.
  private func cString(at address: UInt64) -> String {
    var bytes: [UInt8] = []
    for chunk in 0..<8 {
      guard let part = try? read(at: address + UInt64(chunk * 64), count: 64) else { break }
      if let end = part.firstIndex(of: 0) {
        bytes += part[..<end]
        break
      }
      bytes += part
    }
    return String(decoding: bytes, as: UTF8.self)
  }
}
