import Glibc

/// Reading /proc files whole.
enum ProcFile {
  /// The text of a /proc file, read to its end; nil when it cannot be opened or read.
  ///
  /// /proc files report size 0 and are produced a page per read, and
  /// `String(contentsOfFile:)` stops after the first read: the maps of a target with a
  /// few hundred threads (one stack mapping each) would lose every object past the first
  /// 4 KiB, libc among them.
  static func read(_ path: String) -> String? {
    bytes(path).map { String(decoding: $0, as: UTF8.self) }
  }

  /// The bytes of a /proc file (binary ones, such as auxv), read to their end.
  static func bytes(_ path: String) -> [UInt8]? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var data: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
      let n = Glibc.read(fd, &chunk, chunk.count)
      if n < 0 && errno == EINTR { continue }
      if n < 0 { return nil }
      if n == 0 { break }
      data += chunk[0..<n]
    }
    return data
  }
}
