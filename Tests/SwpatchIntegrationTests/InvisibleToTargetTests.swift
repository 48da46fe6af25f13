import Foundation
import Glibc
import Testing

/// Patching is invisible to the target: a blocking system call it sits in finishes as
/// if nothing happened (no EINTR, no byte lost, no sleep cut short), and every signal
/// sent to it is delivered exactly once.
@Suite(.serialized, .needsRoot, .needsFixtures) struct InvisibleToTargetTests {
  /// Attach once, then disable and enable: 101 operations, each of which stops the
  /// target (attach also borrows its only thread for mmap and dlopen).
  static func patchRepeatedly(_ target: Fixture, _ ws: Workspace, cycles: Int = 50) {
    let patch = ws.patchFile("fix-compute", library: "libfix.so", functions: [("compute", "compute_v2")])
    let attach = ws.swpatch("attach", "\(target.pid)", patch)
    #expect(attach.status == 0, "\(attach.output)")
    for cycle in 0..<cycles {
      for verb in ["disable", "enable"] {
        let result = ws.swpatch(verb, "\(target.pid)", "fix-compute")
        #expect(result.status == 0, "cycle \(cycle) \(verb): \(result.output)")
      }
    }
  }

  @Test func readOnAPipeLosesNoByteAndSeesNoEINTR() throws {
    let ws = Workspace()
    let fifo = ws.directory + "/pipe"
    #expect(mkfifo(fifo, 0o600) == 0)
    let stream = (0..<65536).map { UInt8(truncatingIfNeeded: ($0 &* 2_654_435_761) >> 13) }
    let target = try Fixture("blocked", ["read", fifo, "\(stream.count)"])
    #expect(target.waitForValue("compute", "42"))
    #expect(waitForThread(of: target.pid, inSyscall: 0))
    Self.patchRepeatedly(target, ws)
    let fd = open(fifo, O_WRONLY)
    #expect(fd >= 0)
    #expect(stream.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) } == stream.count)
    close(fd)
    let line = target.output.wait { $0.hasPrefix("read=") }?.1
    #expect(line == "read=\(stream.count) hash=\(fnv1a(stream)) eintr=0 compute=63")
  }

  @Test func nanosleepIsNeverCutShort() throws {
    let ws = Workspace()
    let target = try Fixture("blocked", ["sleep", "200"])
    #expect(target.waitForValue("compute", "42"))
    Self.patchRepeatedly(target, ws)
    let mark = target.output.count
    #expect(target.output.wait(from: mark) { $0.hasPrefix("sleep=") } != nil)
    let sleeps = target.output.all.filter { $0.hasPrefix("sleep=") }
    #expect(!sleeps.isEmpty)
    for line in sleeps {
      // nanosleep guarantees at least the time asked; a restart that lost the remaining
      // time, or an EINTR, would show here.
      #expect(value("ret", in: line) == 0, "\(line)")
      #expect(value("eintr", in: line) == 0, "\(line)")
      #expect((value("slept_ms", in: line) ?? 0) >= 200, "\(line)")
    }
    #expect(target.waitForValue("compute", "63", from: mark))
  }

  @Test func acceptReturnsTheConnectionWithNoEINTR() throws {
    let ws = Workspace()
    let path = ws.directory + "/socket"
    let target = try Fixture("blocked", ["accept", path])
    #expect(target.waitForValue("compute", "42"))
    #expect(waitForThread(of: target.pid, inSyscall: 43))
    Self.patchRepeatedly(target, ws)
    let client = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(client) }
    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    withUnsafeMutableBytes(of: &address.sun_path) { buffer in
      for (i, byte) in path.utf8.enumerated() { buffer[i] = byte }
    }
    let connected = withUnsafePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
        connect(client, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
      }
    }
    #expect(connected == 0)
    let message = Array("hello-5a\n".utf8)
    #expect(write(client, message, message.count) == message.count)
    let line = target.output.wait { $0.hasPrefix("accepted=") }?.1
    #expect(line == "accepted=hello-5a eintr=0 compute=63")
  }

  @Test func everySignalIsDeliveredExactlyOnce() throws {
    let ws = Workspace()
    let target = try Fixture("signals")
    #expect(target.waitForValue("compute", "42"))
    let sender = SignalSender(pid: target.pid, output: target.output)
    sender.start()
    Self.patchRepeatedly(target, ws)
    let (sent, lost) = sender.finish()
    #expect(sent > 0)
    #expect(lost == 0, "\(lost) of \(sent) SIGUSR1 never arrived")
    // Nothing invented: after a quiet moment the count is exactly what was sent.
    #expect(!target.waitForValue("usr1", "\(sent + 1)", timeout: 0.5))
    #expect(latest("usr1", in: target) == sent)
    #expect(target.waitForValue("compute", "63"))
  }
}

/// Sends SIGUSR1 one at a time, each only after the target has counted the previous one
/// (standard signals do not queue, so two in flight could merge), until `finish`.
final class SignalSender: @unchecked Sendable {
  let pid: pid_t
  let output: LineBuffer
  private let lock = NSLock()
  private var stopping = false
  private var sent = 0
  private var lost = 0
  private let done = DispatchSemaphore(value: 0)

  init(pid: pid_t, output: LineBuffer) {
    self.pid = pid
    self.output = output
  }

  func start() {
    Thread { [self] in
      while !lock.withLock({ stopping }) {
        kill(pid, SIGUSR1)
        let count = lock.withLock {
          sent += 1
          return sent
        }
        if output.wait(timeout: 10, { $0.hasPrefix("usr1=\(count) ") }) == nil {
          lock.withLock { lost += 1 }
          break
        }
      }
      done.signal()
    }.start()
  }

  /// Stops sending; returns how many were sent and how many never arrived.
  func finish() -> (sent: Int, lost: Int) {
    lock.withLock { stopping = true }
    done.wait()
    return lock.withLock { (sent, lost) }
  }
}

/// The integer value of `key=` in one line.
func value(_ key: String, in line: String) -> Int? {
  for field in line.split(separator: " ") where field.hasPrefix(key + "=") {
    return Int(field.dropFirst(key.count + 1))
  }
  return nil
}

/// FNV-1a, 64 bits, in lowercase hex: what the `blocked read` fixture prints.
func fnv1a(_ bytes: [UInt8]) -> String {
  var hash: UInt64 = 1_469_598_103_934_665_603
  for byte in bytes { hash = (hash ^ UInt64(byte)) &* 1_099_511_628_211 }
  return String(hash, radix: 16)
}

/// Waits (up to 5 s) until some thread of `pid` is blocked in syscall `number`.
func waitForThread(of pid: pid_t, inSyscall number: Int) -> Bool {
  for _ in 0..<500 {
    let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []
    for tid in tasks {
      let text = (try? String(contentsOfFile: "/proc/\(pid)/task/\(tid)/syscall", encoding: .utf8)) ?? ""
      if text.hasPrefix("\(number) ") { return true }
    }
    usleep(10_000)
  }
  return false
}
