import Dispatch
import FoundationEssentials
import Glibc
import Logging
import NIOCore
import NIOPosix
import SwpatchBase
import SwpatchProcess
import SwpatchProtocol
import SwpatchState
import Synchronization

/// How a daemon is set up.
public struct DaemonConfig: Sendable {
  public var socketPath: String
  public var stateDirectory: String
  /// Group that may connect (the socket is mode 0660); nil: root's group only.
  public var socketGroup: UInt32?
  /// Client connections served at once; more get a `too_many_connections` line and are
  /// closed. Also bounded by half the descriptor limit, so idle clients cannot take
  /// the descriptors the daemon needs for targets and its state files.
  public var maxConnections: Int

  public init(
    socketPath: String, stateDirectory: String, socketGroup: UInt32? = nil,
    maxConnections: Int = DaemonConfig.defaultMaxConnections
  ) {
    self.socketPath = socketPath
    self.stateDirectory = stateDirectory
    self.socketGroup = socketGroup
    self.maxConnections = maxConnections
  }

  /// 512, or `SWPATCH_MAX_CONNECTIONS` when it is a positive integer.
  public static var defaultMaxConnections: Int {
    ProcessInfo.processInfo.environment["SWPATCH_MAX_CONNECTIONS"].flatMap(Int.init).flatMap {
      $0 > 0 ? $0 : nil
    } ?? 512
  }

  public var state: StateDirectory { StateDirectory(stateDirectory) }
  public var socket: SocketLocation { SocketLocation(socketPath) }
  public var pidFile: String { state.pidFile }
}

/// The daemon failed to start; nothing is served.
public struct DaemonStartError: Error, CustomStringConvertible {
  public var description: String
}

/// The socket server: SwiftNIO on one event loop, newline-framed JSON, each connection
/// identified by SO_PEERCRED. Requests go to `DaemonService`.
public enum DaemonServer {
  /// Serves until SIGTERM or SIGINT, then finishes the operation in progress, removes
  /// its socket and pid file, and exits the process with 0.
  public static func run(_ config: DaemonConfig, logger: Logger) throws -> Never {
    try prepareSocketDirectory(config.socket)
    let config = {
      var config = config
      config.maxConnections = min(config.maxConnections, max(1, raiseDescriptorLimit() / 2))
      return config
    }()
    let locks = try takeLocks(config)
    // The pid file exists before the socket does: a client that gets an answer always
    // finds it (issue 20). Written under the locks, so no other daemon races for it.
    try writePidFile(config.pidFile)
    let service = DaemonService(stateDirectory: config.stateDirectory)
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let channel: Channel
    do {
      try service.start()
      channel = try bind(config, service: service, group: group)
    } catch {
      unlink(config.pidFile)
      throw error
    }
    logger.info(
      "swpatchd serving", metadata: ["socket": "\(config.socketPath)", "state": "\(config.stateDirectory)"])
    let stop: @Sendable (String) -> Void = { reason in
      logger.info("swpatchd stopping", metadata: ["reason": "\(reason)"])
      try? channel.close().wait()
      service.shutdown()
      unlink(config.socketPath)
      unlink(config.pidFile)
      exit(0)
    }
    let signals = handleTermination { stop("signal \($0)") }
    let watch = watchSocket(config.socketPath) { stop("its socket \(config.socketPath) was removed") }
    // The signal sources, the socket watch and the lock descriptors must live as long as
    // the server: an optimised build would otherwise release them early, and SIGTERM
    // (set to SIG_IGN for the source) would then be ignored.
    try withExtendedLifetime((signals, watch, locks)) { try channel.closeFuture.wait() }
    // The listening socket closed by itself: serve no more, but still finish cleanly.
    service.shutdown()
    unlink(config.pidFile)
    exit(0)
  }

  // MARK: Socket

  private static func bind(
    _ config: DaemonConfig, service: DaemonService, group: MultiThreadedEventLoopGroup
  ) throws -> Channel {
    let connections = ConnectionCount(limit: config.maxConnections)
    let bootstrap = ServerBootstrap(group: group)
      .serverChannelOption(.backlog, value: 64)
      .serverChannelInitializer { channel in
        // Out of descriptors, accept fails at once and the socket stays readable: without
        // a pause the loop retries at full speed (issue D). This bootstrap API does not
        // add the handler itself.
        channel.eventLoop.makeCompletedFuture {
          try channel.pipeline.syncOperations.addHandler(
            AcceptBackoffHandler(shouldForwardIOErrorCaught: false) { _ in .milliseconds(250) })
        }
      }
      .childChannelOption(.allowRemoteHalfClosure, value: true)
      .childChannelInitializer { channel in
        channel.eventLoop.makeCompletedFuture {
          guard connections.enter() else {
            return try channel.pipeline.syncOperations.addHandler(RefusingHandler(limit: connections.limit))
          }
          channel.closeFuture.whenComplete { _ in connections.leave() }
          try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(LineFrameDecoder()))
          try channel.pipeline.syncOperations.addHandler(RequestHandler(service: service))
        }
      }
    // The socket is born 0600 (no window where others could connect), then opened to
    // the configured group.
    let previous = umask(0o177)
    defer { umask(previous) }
    let channel: Channel
    do {
      channel = try bootstrap.bind(unixDomainSocketPath: config.socketPath, cleanupExistingSocketFile: true)
        .wait()
    } catch {
      throw DaemonStartError(description: "cannot listen on \(config.socketPath): \(error)")
    }
    if let gid = config.socketGroup {
      guard chown(config.socketPath, 0, gid) == 0, chmod(config.socketPath, 0o660) == 0 else {
        throw DaemonStartError(
          description: "cannot give \(config.socketPath) to group \(gid): \(String(cString: strerror(errno)))"
        )
      }
    }
    return channel
  }

  /// The socket's directory is created if missing; it must be writable by root only,
  /// or anyone could replace the socket with their own.
  static func prepareSocketDirectory(_ socket: SocketLocation) throws {
    let directory = socket.directory
    if !FileManager.default.fileExists(atPath: directory) {
      try? FileManager.default.createDirectory(
        atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
    }
    var info = stat()
    guard stat(directory, &info) == 0 else {
      throw DaemonStartError(description: "cannot create the socket directory \(directory)")
    }
    guard info.st_uid == 0, info.st_mode & (S_IWGRP | S_IWOTH) == 0 else {
      throw DaemonStartError(
        description:
          "the socket directory \(directory) is writable by users other than root; use one only root can write (e.g. /run/swpatch)"
      )
    }
  }

  /// Raises the soft descriptor limit to the hard one (a daemon serving many clients
  /// and targets needs more than the usual 1024) and returns the limit now in force.
  private static func raiseDescriptorLimit() -> Int {
    var limit = rlimit()
    guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 1024 }
    if limit.rlim_cur < limit.rlim_max {
      var raised = limit
      raised.rlim_cur = limit.rlim_max
      if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &raised) == 0 { limit = raised }
    }
    return Int(clamping: limit.rlim_cur)
  }

  // MARK: One daemon per state directory and per socket

  /// Exclusive locks held for the daemon's life: a second daemon on the same state
  /// directory or socket refuses to start instead of stealing the socket.
  private static func takeLocks(_ config: DaemonConfig) throws -> [Int32] {
    try config.state.create()
    return try [config.state.daemonLock, config.socket.lock].map { path in
      let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
      guard fd >= 0, flock(fd, LOCK_EX | LOCK_NB) == 0 else {
        let holder =
          StateFile.read(config.pidFile).map { String(decoding: $0, as: UTF8.self) }?
          .trimmed() ?? "?"
        throw DaemonStartError(
          description:
            "another swpatchd (pid \(holder)) already serves \(config.socketPath) or \(config.stateDirectory)"
        )
      }
      return fd
    }
  }

  /// Through a temporary name and a rename, so a reader sees the old file or the whole
  /// new one, never an empty or half-written one.
  private static func writePidFile(_ path: String) throws {
    do {
      try StateFile.replace(path, with: Array("\(getpid())\n".utf8), mode: 0o644)
    } catch {
      throw DaemonStartError(description: "cannot write the pid file \(error)")
    }
  }

  // MARK: Signals

  /// Runs `body` once the socket file is gone (its directory removed, or deleted by
  /// hand): no client can reach this daemon any more, so it stops instead of lingering.
  private static func watchSocket(_ path: String, _ body: @escaping @Sendable () -> Void)
    -> any DispatchSourceTimer
  {
    let timer = DispatchSource.makeTimerSource(queue: DispatchQueue(label: "swpatchd.socket-watch"))
    timer.schedule(deadline: .now() + 1, repeating: 1)
    timer.setEventHandler { if access(path, F_OK) != 0 { body() } }
    timer.resume()
    return timer
  }

  /// Runs `body` on a dispatch queue when SIGTERM or SIGINT arrives.
  private static func handleTermination(_ body: @escaping @Sendable (Int32) -> Void)
    -> [any DispatchSourceSignal]
  {
    let queue = DispatchQueue(label: "swpatchd.signals")
    return [SIGTERM, SIGINT].map { number in
      signal(number, SIG_IGN)
      let source = DispatchSource.makeSignalSource(signal: number, queue: queue)
      source.setEventHandler { body(number) }
      source.resume()
      return source
    }
  }
}

/// Splits the byte stream into lines; a line over `DaemonProtocol.maxLineBytes` is an
/// error that closes the connection (a client cannot make the daemon buffer forever).
final class LineFrameDecoder: ByteToMessageDecoder {
  typealias InboundOut = ByteBuffer

  struct LineTooLong: Error {}

  func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
    if let newline = buffer.readableBytesView.firstIndex(of: 0x0a) {
      let length = newline - buffer.readerIndex
      guard length <= DaemonProtocol.maxLineBytes else { throw LineTooLong() }
      let line = buffer.readSlice(length: length)!
      buffer.moveReaderIndex(forwardBy: 1)
      context.fireChannelRead(wrapInboundOut(line))
      return .continue
    }
    guard buffer.readableBytes <= DaemonProtocol.maxLineBytes else { throw LineTooLong() }
    return .needMoreData
  }

  /// At EOF a last line without its newline still counts; anything else is dropped.
  func decodeLast(
    context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool
  ) throws -> DecodingState {
    if try decode(context: context, buffer: &buffer) == .continue { return .continue }
    if buffer.readableBytes > 0, let rest = buffer.readSlice(length: buffer.readableBytes) {
      context.fireChannelRead(wrapInboundOut(rest))
    }
    return .needMoreData
  }
}

/// How many client connections are open, against the configured limit.
final class ConnectionCount: Sendable {
  let limit: Int
  private let open = Mutex(0)

  init(limit: Int) { self.limit = limit }

  /// Counts one more connection, or returns false when the limit is reached.
  func enter() -> Bool {
    open.withLock { open in
      guard open < limit else { return false }
      open += 1
      return true
    }
  }

  func leave() { open.withLock { $0 -= 1 } }
}

/// A connection over the limit: one error line, then closed.
final class RefusingHandler: ChannelInboundHandler {
  typealias InboundIn = ByteBuffer
  typealias OutboundOut = ByteBuffer
  let limit: Int

  init(limit: Int) { self.limit = limit }

  func channelActive(context: ChannelHandlerContext) {
    let line = WireCoding.line(
      Response<NoResult>.failure(
        ErrorBody(
          code: "too_many_connections",
          message: "the daemon already serves \(limit) connections; retry when some have closed")))
    var buffer = context.channel.allocator.buffer(capacity: line.count)
    buffer.writeBytes(line)
    let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
    context.writeAndFlush(wrapOutboundOut(buffer)).whenComplete { _ in bound.value.close(promise: nil) }
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {}
}

/// One connection: learns the peer's credentials, hands each line to the service and
/// writes the responses back in request order.
final class RequestHandler: ChannelInboundHandler {
  typealias InboundIn = ByteBuffer
  typealias OutboundOut = ByteBuffer

  private let service: DaemonService
  private var peer: EventLoopFuture<PeerCredentials>?
  /// The last response written; the next waits for it, so responses keep request order.
  private var lastReply: EventLoopFuture<Void>?
  /// The client shut down its sending side: close once every answer is written.
  private var inputClosed = false
  /// Set when the connection closes: its queued operations are then not started.
  private let closed = Cancellation()
  /// Lines read but not yet handed to the service, and requests handed over whose
  /// answers are not yet written to the socket. A client that sends without reading
  /// would otherwise have the daemon compute and hold answers without end: at most
  /// `maxPending` are in hand, and while lines wait the connection is not read.
  private var waiting = CircularBuffer<ByteBuffer>()
  private var pending = 0
  private var reading = true
  static let maxPending = 64

  init(service: DaemonService) {
    self.service = service
  }

  func channelActive(context: ChannelHandlerContext) {
    guard let provider = context.channel as? SocketOptionProvider else {
      peer = context.eventLoop.makeFailedFuture(ChannelError.operationUnsupported)
      return
    }
    let raw: EventLoopFuture<KernelPeerCredentials> = provider.unsafeGetSocketOption(
      level: SocketOptionLevel(KernelPeerCredentials.level),
      name: SocketOptionName(KernelPeerCredentials.option))
    peer = raw.map { PeerCredentials(pid: $0.pid, uid: $0.uid, gid: $0.gid) }
    context.fireChannelActive()
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    waiting.append(unwrapInboundIn(data))
    dispatch(context)
  }

  /// Hands waiting lines to the service while fewer than `maxPending` answers are in
  /// hand, reads more only when none wait, and closes a half-closed connection once
  /// everything is answered.
  private func dispatch(_ context: ChannelHandlerContext) {
    guard context.channel.isActive else { return waiting.removeAll() }
    while pending < Self.maxPending, let line = waiting.popFirst() { handle(line, context) }
    let wanted = waiting.isEmpty && pending < Self.maxPending && context.channel.isWritable
    if wanted != reading {
      reading = wanted
      // Turning autoRead back on issues the read that was held back.
      try? context.channel.syncOptions?.setOption(ChannelOptions.autoRead, value: wanted)
    }
    if inputClosed && waiting.isEmpty && pending == 0 { context.close(promise: nil) }
  }

  private func handle(_ buffer: ByteBuffer, _ context: ChannelHandlerContext) {
    let line = Data(buffer.readableBytesView)
    let reply = context.eventLoop.makePromise(of: Data.self)
    let service = self.service
    let closed = self.closed
    (peer ?? context.eventLoop.makeFailedFuture(ChannelError.operationUnsupported)).whenComplete { result in
      switch result {
      case .success(let peer):
        service.handle(line, peer: peer, cancellation: closed) { reply.succeed($0) }
      case .failure:
        reply.succeed(
          WireCoding.line(
            Response<NoResult>.failure(
              ErrorBody(code: "unauthenticated", message: "cannot identify the caller"))))
      }
    }
    pending += 1
    let bound = NIOLoopBound((context, self), eventLoop: context.eventLoop)
    let previous = lastReply ?? context.eventLoop.makeSucceededVoidFuture()
    let written = previous.flatMap { reply.futureResult }.flatMap { bytes in
      let (context, handler) = bound.value
      var buffer = context.channel.allocator.buffer(capacity: bytes.count)
      buffer.writeBytes(bytes)
      return context.writeAndFlush(handler.wrapOutboundOut(buffer))
    }.flatMapError { _ in bound.value.0.eventLoop.makeSucceededVoidFuture() }
    written.whenComplete { _ in
      let (context, handler) = bound.value
      handler.pending -= 1
      handler.dispatch(context)
    }
    lastReply = written
  }

  /// Answers the kernel cannot take yet pile up in the channel: read no more requests
  /// until they drain.
  func channelWritabilityChanged(context: ChannelHandlerContext) {
    dispatch(context)
    context.fireChannelWritabilityChanged()
  }

  /// A client that went away (closed or was killed) no longer wants its queued
  /// operations; one already running finishes (committed or rolled back).
  func channelInactive(context: ChannelHandlerContext) {
    closed.cancel()
    waiting.removeAll()
    context.fireChannelInactive()
  }

  /// A client that closed its sending side still gets its pending responses.
  func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
    guard case ChannelEvent.inputClosed = event as? ChannelEvent ?? .outputClosed else {
      return context.fireUserInboundEventTriggered(event)
    }
    inputClosed = true
    dispatch(context)
  }

  /// Oversized lines and broken connections end this connection only.
  func errorCaught(context: ChannelHandlerContext, error: any Error) {
    if error is LineFrameDecoder.LineTooLong {
      var buffer = context.channel.allocator.buffer(capacity: 128)
      buffer.writeBytes(
        WireCoding.line(
          Response<NoResult>.failure(
            ErrorBody(
              code: "request_too_large", message: "request line over \(DaemonProtocol.maxLineBytes) bytes"))))
      context.writeAndFlush(wrapOutboundOut(buffer), promise: nil)
    }
    context.close(promise: nil)
  }
}
