import Foundation
import Glibc
import SwpatchPatcher
import SwpatchProcess
import SwpatchSymbols
import Testing

/// A `parked` fixture with its FIFO: the test parks and releases the fixture's parker
/// thread inside answer() by writing command bytes.
final class ParkedFixture: @unchecked Sendable {
  let fixture: Fixture
  let fifo: String
  private let writer: Int32

  init(_ ws: Workspace, program: String = "parked") throws {
    fifo = ws.directory + "/parked.fifo"
    guard mkfifo(fifo, 0o600) == 0 else { throw POSIXError(.EIO) }
    fixture = try Fixture(program, ["20", fifo])
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

@Suite(.serialized, .needsRoot, .needsFixtures) struct StackUnwinderTests {
  @Test func everyThreadIsUnwoundAndTheParkedThreadShowsAnswerOnItsStack() throws {
    let ws = Workspace()
    let target = try ParkedFixture(ws)
    let parked = try target.park()
    let answer = try address(of: "answer", in: target.fixture, workspace: ws)
    let pid = target.pid
    let stacks = try TracerThread.shared.withStopped(pid) { try StackUnwinder.stacks(of: $0) }
    #expect(Set(stacks.map(\.tid)) == Set(TargetProcess.threadIDs(of: pid)))
    let parker = try #require(stacks.first { $0.tid == parked.tid })
    #expect(parker.frames.contains { $0.address >= answer && $0.address < answer + 0x60 && !$0.isActivation })
    #expect(target.fixture.keepsRunning())
  }

  /// A target killed while held: libdwfl cannot attach to its threads any more, and the
  /// unwinder must fail with an error, not free its Dwfl twice (which crashed the daemon
  /// when a target was SIGKILLed during an attach's stack check).
  @Test func aTargetKilledWhileHeldFailsTheUnwindCleanly() throws {
    for _ in 0..<4 {
      let target = try Fixture("threads", ["20", "4"])
      #expect(target.waitForValue("compute", "42"))
      let pid = target.pid
      let outcome = try TracerThread.shared.withStopped(pid) { stopped -> String in
        kill(pid, SIGKILL)
        usleep(20_000)
        do {
          _ = try StackUnwinder.stacks(of: stopped)
          return "unwound"
        } catch {
          return "\(error)"
        }
      }
      #expect(outcome.contains("unwind") || outcome == "unwound", "\(outcome)")
      target.stop()
    }
  }
}

/// Releases the parked thread from a background thread once swpatch has stopped the
/// target at least once and let it go again (so the attempt it made was blocked and a
/// retry is due), or after `fallback` seconds if that was never seen (a missed stop:
/// the operation is still retrying then, as its --retry-for is longer).
func releaseAfterABlockedAttempt(_ target: ParkedFixture, fallback: Double = 20) {
  let thread = Thread {
    let deadline = Date().addingTimeInterval(fallback)
    var seenTraced = false
    while Date() < deadline {
      let status = (try? String(contentsOfFile: "/proc/\(target.pid)/status", encoding: .utf8)) ?? ""
      let traced = !status.contains("TracerPid:\t0\n")
      if traced { seenTraced = true } else if seenTraced { break }
      usleep(200)
    }
    target.release()
  }
  thread.start()
}

/// Starts, on a thread of its own, an attach of `answerPatch` to a parked fixture whose
/// thread is parked in answer(), and returns once the daemon logs that the attach is
/// waiting for that thread (the worker is then busy, for up to 30 s). The attach's exit
/// status lands in the returned buffer; whether the wait was seen, in `waiting`.
func attachWaitingOnParkedThread(_ ws: Workspace, _ target: ParkedFixture) -> (
  result: LineBuffer, waiting: Bool
) {
  let result = LineBuffer()
  Thread {
    let attach = ws.swpatch("attach", "\(target.pid)", answerPatch(ws), "--retry-for", "30s")
    result.append("\(attach.status)")
  }.start()
  var waiting = false
  for _ in 0..<1000 where !waiting {
    waiting =
      (try? String(contentsOfFile: ws.stateDir + "/swpatchd.log", encoding: .utf8))?
      .contains("waiting: thread") == true
    if !waiting { usleep(10_000) }
  }
  return (result, waiting)
}

/// The patch file that replaces parked's answer() with libparked.so's answer_v2.
func answerPatch(_ ws: Workspace) -> String {
  ws.patchFile("v2", library: "libparked.so", functions: [("answer", "answer_v2")])
}

@Suite(.serialized, .needsRoot, .needsFixtures) struct ConsistencyTests {
  @Test func stackConsistencyCatchesTheParkedThreadWhenItLeavesTheOldFunction() throws {
    let ws = Workspace()
    let target = try ParkedFixture(ws)
    #expect(target.fixture.waitForValue("answer", "1"))
    let parked = try target.park()
    #expect(parked.version == 1)
    releaseAfterABlockedAttempt(target)
    let result = ws.swpatch("attach", "\(target.pid)", answerPatch(ws), "--retry-for", "30s", "--json")
    #expect(result.status == 0, "\(result.output)")
    let json = try #require(result.json, "\(result.output)")
    #expect(json["consistency"] as? String == "stack")
    // No waiting for an instant when the thread is out: it was caught on return.
    #expect(json["retries"] as? Int == 0, "\(result.output)")
    #expect(json["threads_caught"] as? Int == 1, "\(result.output)")
    #expect((json["transition_us"] as? Int ?? 0) > 0, "\(result.output)")
    // The parked call finished in the version it started in; new calls reach v2.
    #expect(target.fixture.output.wait { $0 == "left version=1 tid=\(parked.tid)" } != nil)
    #expect(target.fixture.waitForValue("answer", "2", from: target.fixture.output.count))
  }

  @Test func stackConsistencyTimesOutNamingTheThreadAndChangesNothing() throws {
    let ws = Workspace()
    let target = try ParkedFixture(ws)
    #expect(target.fixture.waitForValue("answer", "1"))
    let parked = try target.park()
    let answer = try address(of: "answer", in: target.fixture, workspace: ws)
    let before = target.fixture.memory(at: answer, count: 32)
    let mapsBefore = try String(contentsOfFile: "/proc/\(target.pid)/maps", encoding: .utf8)

    let text = ws.swpatch("attach", "\(target.pid)", answerPatch(ws), "--retry-for", "1s")
    #expect(text.status == 1, "\(text.output)")
    let lines = text.output.split(separator: "\n").map(String.init)
    #expect(lines.count == 1, "\(lines)")
    // What it waited for went to the daemon's log.
    let log = try String(contentsOfFile: ws.stateDir + "/swpatchd.log", encoding: .utf8)
    #expect(log.contains("waiting: thread \(parked.tid) is inside answer"), "\(log)")
    let error = try #require(lines.last)
    #expect(error.hasPrefix("error: thread \(parked.tid) is inside answer (frame #"), "\(error)")
    #expect(error.contains("did not return from it within 1 s; the operation was undone"), "\(error)")
    #expect(error.contains("--consistency entry"))

    let json = ws.swpatch("attach", "\(target.pid)", answerPatch(ws), "--retry-for", "200ms", "--json")
    #expect(json.status == 1)
    let object = json.json?["error"] as? [String: Any]
    #expect(object?["code"] as? String == "stack_check_timeout", "\(json.output)")

    // Nothing changed: the function's bytes, the mappings (the library the transition
    // loaded was unloaded again, its pages unmapped), the registry; the target still
    // runs the original.
    #expect(target.fixture.memory(at: answer, count: 32) == before)
    let mapsAfter = try String(contentsOfFile: "/proc/\(target.pid)/maps", encoding: .utf8)
    #expect(mapsAfter == mapsBefore)
    #expect(!mapsAfter.contains("libparked.so"))
    #expect(ws.swpatch("status", "\(target.pid)").output.contains("no patched targets"))
    #expect(target.fixture.keepsRunning())
    #expect(target.fixture.output.all.last { $0.hasPrefix("tick=") }?.hasSuffix("answer=1") == true)
    target.release()
    #expect(target.fixture.output.wait { $0 == "left version=1 tid=\(parked.tid)" } != nil)
  }

  @Test func entryConsistencySwitchesAtOnceWhileTheParkedCallFinishesInTheOldVersion() throws {
    let ws = Workspace()
    let target = try ParkedFixture(ws)
    #expect(target.fixture.waitForValue("answer", "1"))
    let parked = try target.park()
    let result = ws.swpatch(
      "attach", "\(target.pid)", answerPatch(ws), "--consistency", "entry", "--retry-for", "0", "--json")
    #expect(result.status == 0, "\(result.output)")
    let json = try #require(result.json, "\(result.output)")
    #expect(json["consistency"] as? String == "entry")
    #expect(json["retries"] as? Int == 0)
    #expect(target.fixture.waitForValue("answer", "2", from: target.fixture.output.count))
    target.release()
    #expect(target.fixture.output.wait { $0 == "left version=1 tid=\(parked.tid)" } != nil)
  }

  @Test func disableWaitsForAThreadInsideTheReplacementOrTimesOutChangingNothing() throws {
    let ws = Workspace()
    let target = try ParkedFixture(ws)
    #expect(target.fixture.waitForValue("answer", "1"))
    #expect(ws.swpatch("attach", "\(target.pid)", answerPatch(ws)).status == 0)
    #expect(target.fixture.waitForValue("answer", "2", from: target.fixture.output.count))
    let parked = try target.park()
    #expect(parked.version == 2)
    let answer = try address(of: "answer", in: target.fixture, workspace: ws)
    let before = target.fixture.memory(at: answer, count: 32)

    let refused = ws.swpatch("disable", "\(target.pid)", "v2", "--retry-for", "500ms", "--json")
    #expect(refused.status == 1)
    let error = try #require(refused.json?["error"] as? [String: Any], "\(refused.output)")
    #expect(error["code"] as? String == "stack_check_timeout")
    let message = error["message"] as? String ?? ""
    #expect(message.hasPrefix("thread \(parked.tid) is inside answer_v2 (frame #"), "\(message)")
    #expect(target.fixture.memory(at: answer, count: 32) == before)
    #expect(ws.swpatch("status", "\(target.pid)").output.contains("patches: v2 enabled"))
    #expect(target.fixture.waitForValue("answer", "2", from: target.fixture.output.count))

    releaseAfterABlockedAttempt(target)
    let result = ws.swpatch("disable", "\(target.pid)", "v2", "--retry-for", "30s", "--json")
    #expect(result.status == 0, "\(result.output)")
    #expect(result.json?["threads_caught"] as? Int == 1, "disable did not catch it: \(result.output)")
    #expect(target.fixture.output.wait { $0 == "left version=2 tid=\(parked.tid)" } != nil)
    #expect(target.fixture.waitForValue("answer", "1", from: target.fixture.output.count))
    let status = ws.swpatch("status", "\(target.pid)").output
    #expect(status.contains("note: disabled patches stay loaded"), "\(status)")
  }

  @Test func enableUnderStackWaitsForTheOriginalToBeLeft() throws {
    let ws = Workspace()
    let target = try ParkedFixture(ws)
    #expect(ws.swpatch("attach", "\(target.pid)", answerPatch(ws)).status == 0)
    #expect(ws.swpatch("disable", "\(target.pid)", "v2").status == 0)
    #expect(target.fixture.waitForValue("answer", "1", from: target.fixture.output.count))
    let parked = try target.park()
    #expect(parked.version == 1)
    let refused = ws.swpatch("enable", "\(target.pid)", "v2", "--retry-for", "0", "--json")
    let error = refused.json?["error"] as? [String: Any]
    #expect(error?["code"] as? String == "stack_check_timeout", "\(refused.output)")
    #expect((error?["message"] as? String)?.contains("did not return from it within 0 s") == true)
    target.release()
    #expect(target.fixture.output.wait { $0 == "left version=1 tid=\(parked.tid)" } != nil)
    let result = ws.swpatch("enable", "\(target.pid)", "v2", "--json")
    #expect(result.status == 0, "\(result.output)")
    #expect(target.fixture.waitForValue("answer", "2", from: target.fixture.output.count))
  }

  @Test func aThreadInTheColdPartOfTheOldFunctionBlocksToo() throws {
    let ws = Workspace()
    // -O2 moved answer's parking path into answer.cold: the parked frame is outside
    // answer's own symbol, and only guarding the cold part as well catches it.
    let target = try ParkedFixture(ws, program: "parked-cold")
    #expect(target.fixture.waitForValue("answer", "1"))
    let parked = try target.park()
    let result = ws.swpatch("attach", "\(target.pid)", answerPatch(ws), "--retry-for", "300ms", "--json")
    let error = try #require(result.json?["error"] as? [String: Any], "\(result.output)")
    #expect(error["code"] as? String == "stack_check_timeout")
    let message = error["message"] as? String ?? ""
    #expect(
      message.hasPrefix("thread \(parked.tid) is inside answer.cold (part of answer) (frame #"), "\(message)")
    target.release()
    #expect(target.fixture.output.wait { $0 == "left version=1 tid=\(parked.tid)" } != nil)
    let later = ws.swpatch("attach", "\(target.pid)", answerPatch(ws), "--json")
    #expect(later.status == 0, "\(later.output)")
    #expect(target.fixture.waitForValue("answer", "2", from: target.fixture.output.count))
  }

  @Test func partlyUnwoundStacksStillCatchTheParkedFrameAndAreNoted() throws {
    let ws = Workspace()
    // No CFI in the program: unwinding stops at its first frame. The parked frame in
    // answer is still found (read's CFI in libc gives its return address), and a check
    // that passes says which stacks it could read only partly.
    let target = try ParkedFixture(ws, program: "parked-nocfi")
    #expect(target.fixture.waitForValue("answer", "1"))
    let parked = try target.park()
    let refused = ws.swpatch("attach", "\(target.pid)", answerPatch(ws), "--retry-for", "0", "--json")
    let error = try #require(refused.json?["error"] as? [String: Any], "\(refused.output)")
    #expect(
      (error["message"] as? String)?.hasPrefix("thread \(parked.tid) is inside answer (frame #") == true)
    target.release()
    #expect(target.fixture.output.wait { $0 == "left version=1 tid=\(parked.tid)" } != nil)
    let result = ws.swpatch("attach", "\(target.pid)", answerPatch(ws), "--retry-for", "30s", "--json")
    #expect(result.status == 0, "\(result.output)")
    let notes = result.json?["notes"] as? [String] ?? []
    #expect(
      notes.contains {
        $0.contains("\(parked.tid) (to frame #") && $0.contains("deeper frames were not checked")
      },
      "\(notes)")
    #expect(target.fixture.waitForValue("answer", "2", from: target.fixture.output.count))
  }

  @Test func stackConsistencyUnwindsSixtyThreadsAndPatches() throws {
    // 60 thread stacks push /proc/PID/maps past one page: libc must still be found.
    let ws = Workspace()
    let target = try Fixture("threads", ["20", "60"])
    #expect(target.waitForValue("compute", "42"))
    let patch = ws.patchFile("fix-compute", library: "libfix.so", functions: [("compute", "compute_v2")])
    let result = ws.swpatch("attach", "\(target.pid)", patch, "--retry-for", "30s", "--json")
    #expect(result.status == 0, "\(result.output)")
    #expect(result.json?["consistency"] as? String == "stack")
    let mark = target.output.count
    for worker in [0, 59] {
      #expect(target.output.wait(from: mark) { $0.contains("worker=\(worker) compute=63 ") } != nil)
    }
  }

  @Test func badConsistencyOrRetryForIsAUsageError() throws {
    let ws = Workspace()
    let patch = answerPatch(ws)
    let consistency = ws.swpatch("attach", "1", patch, "--consistency", "sometimes")
    #expect(consistency.status == 64)
    for bad in ["abc", "-1", "5x", "601", "1h"] {
      let result = ws.swpatch("attach", "1", patch, "--retry-for=\(bad)")
      #expect(result.status == 64, "\(bad): \(result.output)")
      #expect(result.output.contains("not a duration between 0 and 600 s"), "\(result.output)")
    }
  }
}
