import Foundation
import Glibc
import SwpatchProcess
import SwpatchSymbols
import Testing

/// A `parked` fixture with its FIFO: the test parks and releases the fixture's parker
/// thread inside answer() by writing command bytes.
final class ParkedFixture: @unchecked Sendable {
  let fixture: Fixture
  let fifo: String
  private let writer: Int32

  init(_ ws: Workspace) throws {
    fifo = ws.directory + "/parked.fifo"
    guard mkfifo(fifo, 0o600) == 0 else { throw POSIXError(.EIO) }
    fixture = try Fixture("parked", ["20", fifo])
    // The fixture opens the FIFO read-write; wait for it so this open cannot block.
    _ = fixture.output.wait { $0.hasPrefix("pid=") }
    writer = open(fifo, O_WRONLY | O_CLOEXEC)
    guard writer >= 0 else { throw POSIXError(.EIO) }
  }

  deinit {
    fixture.stop()
    close(writer)
  }

  var pid: pid_t { fixture.pid }

  /// Parks the parker inside answer() (whichever version is active) and returns its tid
  /// and the version it parked in.
  func park() throws -> (tid: Int32, version: Int) {
    let mark = fixture.output.count
    send("p")
    let line = try #require(fixture.output.wait(from: mark) { $0.hasPrefix("parked ") }?.1)
    return (try #require(Int32(value("tid", line))), try #require(Int(value("version", line))))
  }

  /// Lets the parked thread return from answer(); its "left" line says which version it
  /// finished in.
  func release() { send("r") }

  func send(_ byte: Character) {
    var c = UInt8(ascii: byte.unicodeScalars.first!)
    _ = write(writer, &c, 1)
  }

  private func value(_ key: String, _ line: String) -> String {
    line.split(separator: " ").first { $0.hasPrefix(key + "=") }.map { String($0.dropFirst(key.count + 1)) }
      ?? ""
  }
}

@Suite(.serialized) struct StackUnwinderTests {
  @Test func everyThreadIsUnwoundAndTheParkedThreadShowsAnswerOnItsStack() throws {
    let ws = Workspace()
    let target = try ParkedFixture(ws)
    let parked = try target.park()
    let answer = try address(of: "answer", in: target.fixture, workspace: ws)
    let pid = target.pid
    let stacks = try TracerThread.shared.run {
      let stopped = try StoppedTarget.stop(pid: pid)
      defer { stopped.resume() }
      return try StackUnwinder(stopped).stacks()
    }
    #expect(Set(stacks.map(\.tid)) == Set(TargetProcess.threadIDs(of: pid)))
    let parker = try #require(stacks.first { $0.tid == parked.tid })
    #expect(parker.frames.contains { $0.address >= answer && $0.address < answer + 0x60 && !$0.isActivation })
    #expect(target.fixture.keepsRunning())
  }
}
