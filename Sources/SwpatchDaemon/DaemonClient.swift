import FoundationEssentials
import Glibc
import SwpatchProcess
import SwpatchProtocol
import SwpatchState
import SystemPackage

/// The CLI's end of the socket: one connection per request, one line each way. When no
/// daemon answers, a root client starts one in the background and waits for it.
public struct DaemonClient: Sendable {
  public let socketPath: String
  public let stateDirectory: String
  /// How long a freshly started daemon may take to answer.
  public var startTimeout: Double = 10

  public init(socketPath: String, stateDirectory: String) {
    self.socketPath = socketPath
    self.stateDirectory = stateDirectory
  }

  /// Sends `request` and decodes the response's result, or throws its error.
  public func call<T: Codable & Sendable>(_ request: Request, as type: T.Type) throws(ErrorBody) -> T {
    let request = WireCoding.line(request)
    // The daemon would read a megabyte, refuse and close while we still send: refuse
    // here, before connecting, with the reason rather than a broken pipe.
    guard request.count - 1 <= DaemonProtocol.maxLineBytes else {
      throw ErrorBody(
        code: "request_too_large",
        message:
          "the request is \(request.count - 1) bytes, over the daemon's limit of \(DaemonProtocol.maxLineBytes); the patch file is too large (a patch file names its library, it does not contain it)"
      )
    }
    let line = try exchange(request)
    guard let response = try? JSONDecoder().decode(Response<T>.self, from: line) else {
      throw ErrorBody(
        code: "bad_response",
        message: "the daemon's answer could not be read: \(String(decoding: line.prefix(200), as: UTF8.self))"
      )
    }
    if let error = response.error { throw error }
    guard response.ok, let result = response.result else {
      throw ErrorBody(code: "bad_response", message: "the daemon answered without a result")
    }
    return result
  }

  /// Writes one request line and reads one response line, starting a daemon if needed.
  public func exchange(_ line: Data) throws(ErrorBody) -> Data {
    let fd = try connectOrStart()
    defer { close(fd) }
    do {
      try writeAll(fd, line)
    } catch {
      // A daemon that refuses a request mid-send says why in a line and closes: that
      // line, when it came, is the answer, not the broken pipe.
      if let answer = try? readLine(fd) { return answer }
      throw error
    }
    return try readLine(fd)
  }

  // MARK: Connecting

  private func connectOrStart() throws(ErrorBody) -> Int32 {
    switch connect() {
    case .success(let fd):
      return fd
    case .failure(let error) where error == .noSuchFileOrDirectory || error == .connectionRefused:
      guard getuid() == 0 else {
        throw ErrorBody(
          code: "no_daemon",
          message:
            "no swpatch daemon answers on \(socketPath); ask root to start one (`swpatch daemon`, or the swpatchd.service unit)"
        )
      }
      return try startDaemon()
    case .failure(let error):
      let denied = error == .permissionDenied
      throw ErrorBody(
        code: denied ? "permission_denied" : "no_daemon",
        message: "cannot connect to \(socketPath): \(error)"
          + (denied ? " (the socket is for root and the daemon's socket group)" : ""))
    }
  }

  /// A connected socket, or the errno of the failure.
  public func connect() -> Result<Int32, Errno> {
    let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { return .failure(Errno(rawValue: errno)) }
    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    let bytes = Array(socketPath.utf8)
    guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
      close(fd)
      return .failure(.fileNameTooLong)
    }
    withUnsafeMutableBytes(of: &address.sun_path) { raw in
      raw.copyBytes(from: bytes)
      raw[bytes.count] = 0
    }
    let rc = withUnsafePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
        Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
      }
    }
    guard rc == 0 else {
      let error = errno
      close(fd)
      return .failure(Errno(rawValue: error))
    }
    return .success(fd)
  }

  /// Starts `swpatch daemon --foreground` in its own session with the same socket and
  /// state directory, logging to swpatchd.log there, and waits (bounded) for it.
  private func startDaemon() throws(ErrorBody) -> Int32 {
    let state = StateDirectory(stateDirectory)
    try? state.create()
    let log = state.daemonLog
    let exe = TargetProcess.ownExecutable ?? "swpatch"
    let child: pid_t
    do {
      // A session of its own, so the caller's terminal and process group can end
      // without taking the daemon along; output appended to its log.
      child = try ChildProcess.spawn(
        exe, ["daemon", "--foreground", "--socket", socketPath, "--state-dir", stateDirectory],
        stdout: .file(log, append: true), newSession: true)
    } catch {
      throw ErrorBody(code: "no_daemon", message: "cannot start the daemon: \(error)")
    }
    let deadline = Date().addingTimeInterval(startTimeout)
    var exited = false
    while Date() < deadline {
      if case .success(let fd) = connect() { return fd }
      // Ours may exit at once because another client's daemon won the race to start
      // (it holds the locks): keep trying to connect to that one until the deadline.
      if !exited && ChildProcess.exitStatus(child) != nil { exited = true }
      usleep(20_000)
    }
    if exited {
      throw ErrorBody(code: "no_daemon", message: "the daemon did not start: \(lastLine(of: log))")
    }
    throw ErrorBody(
      code: "no_daemon",
      message:
        "the daemon started (pid \(child)) but did not answer on \(socketPath) within \(Int(startTimeout)) s; see \(log)"
    )
  }

  private func lastLine(of path: String) -> String {
    let text = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
    return text.split(separator: "\n").last.map(String.init) ?? "no message (see \(path))"
  }

  // MARK: Bytes

  private func writeAll(_ fd: Int32, _ data: Data) throws(ErrorBody) {
    var offset = 0
    while offset < data.count {
      let n = data.withUnsafeBytes {
        send(fd, $0.baseAddress! + offset, $0.count - offset, Int32(MSG_NOSIGNAL))
      }
      if n < 0 && errno == EINTR { continue }
      guard n > 0 else {
        throw ErrorBody(
          code: "no_daemon", message: "the daemon closed the connection: \(String(cString: strerror(errno)))")
      }
      offset += n
    }
  }

  private func readLine(_ fd: Int32) throws(ErrorBody) -> Data {
    var data = Data()
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
      let n = recv(fd, &chunk, chunk.count, 0)
      if n < 0 && errno == EINTR { continue }
      guard n > 0 else {
        throw ErrorBody(
          code: "no_daemon", message: "the daemon closed the connection without an answer; see its log")
      }
      data.append(contentsOf: chunk[0..<n])
      if let newline = data.firstIndex(of: 0x0a) { return data[data.startIndex..<newline] }
    }
  }
}
