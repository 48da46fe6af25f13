import Foundation
import Glibc
import Testing

/// No thread resumes inside the bytes an entry jump overwrites: one parked there on
/// purpose is moved out before the write, and one that never leaves refuses the
/// operation with nothing changed.
@Suite(.serialized, .needsRoot, .needsFixtures) struct RewrittenBytesTests {
  /// `sled` is push %rbp (+0); mov %rsp,%rbp (+1); mov $100,%eax (+4): +1 and +4 are
  /// instruction boundaries inside a 5-byte entry jump.
  @Test(arguments: [1, 4] as [UInt64])
  func threadParkedInsideTheEntryIsMovedOutThenPatched(offset: UInt64) throws {
    let ws = Workspace()
    let target = try Fixture("sled", ["20"])
    #expect(target.waitForValue("sled", "100"))
    let sled = try address(of: "sled", in: target, workspace: ws)
    let parker = try Fixture("parker", ["\(target.pid)", String(sled + offset, radix: 16)])
    #expect(parker.output.wait { $0.hasPrefix("parked=") } != nil, "\(parker.output.all)")
    // Job-control stopped, with the main thread about to run the instruction at +offset.
    #expect(waitForState(target.pid, "T"))
    #expect(stoppedProgramCounter(target.pid) == sled + offset)

    let patch = ws.patchFile("fix-sled", library: "libsled.so", functions: [("sled", "sled_v2")])
    // `entry`: under the default `stack` the stack check would (rightly) wait first, the
    // thread being inside sled; this test is about the bytes-in-flight check alone.
    let result = ws.swpatch("attach", "\(target.pid)", patch, "--consistency", "entry")
    #expect(result.status == 0, "\(result.output)")
    #expect(target.memory(at: sled, count: 1) == [0xe9], "no entry jump at sled")
    // The detach puts it back into its job-control stop; under load that takes effect
    // a moment later (it stops before running any user code: the stop is taken in the
    // kernel's signal handling on its way out).
    #expect(waitForState(target.pid, "T"), "a stopped target must stay stopped")
    // Whatever the thread ran to leave the bytes, it is now outside them.
    let pc = try #require(stoppedProgramCounter(target.pid))
    #expect(!(sled + 1..<sled + 5).contains(pc), "thread still at 0x\(String(pc, radix: 16))")

    kill(target.pid, SIGCONT)
    #expect(target.waitForValue("sled", "200", from: 0), "the replacement never ran")
    #expect(target.keepsRunning())
  }

  /// A thread blocked in a system call whose `syscall` lies inside the entry's first
  /// bytes (a resume re-executes it): it is moved into the relocated copy of those bytes,
  /// where the restart re-executes the copied `syscall`; nothing waits for it to leave.
  /// Disabled, it is moved back to the same point of the restored original.
  @Test func threadBlockedInsideTheEntryIsMovedIntoTheRelocatedCopy() throws {
    let ws = Workspace()
    let target = try Fixture("sled", ["20", "stay"])
    #expect(target.waitForValue("sled", "100"))
    let stay = try address(of: "stay", in: target, workspace: ws)
    // The stay thread blocks in pause() with rip at stay+2; a resume restarts the
    // `syscall` at stay+0, inside the bytes the entry jump overwrites.
    #expect(waitForThread(of: target.pid, inSyscall: 34, at: stay + 2))
    let patch = ws.patchFile("fix-stay", library: "libsled.so", functions: [("stay", "stay_v2")])
    let result = ws.swpatch("attach", "\(target.pid)", patch, "--consistency", "entry", "--json")
    #expect(result.status == 0, "\(result.output)")
    #expect(result.json?["threads_moved"] as? Int == 1, "\(result.output)")
    #expect(target.memory(at: stay, count: 1) == [0xe9])
    let status = try #require(ws.swpatch("status", "--json").json?["targets"] as? [[String: Any]])
    let hook = try #require((status.first?["hooks"] as? [[String: Any]])?.first)
    let slot = try #require(UInt64((hook["slot"] as? String ?? "").dropFirst(2), radix: 16))
    let page = slot & ~UInt64(0xfff)
    // Blocked in the same pause(), now two bytes into a copy in the trampoline page.
    var moved = false
    for offset in stride(from: UInt64(64), to: 4096, by: 32) where !moved {
      moved = waitForThread(of: target.pid, inSyscall: 34, at: page + offset + 2, tries: 1)
    }
    #expect(moved, "the blocked thread is not in a relocated copy")
    #expect(target.keepsRunning())
    // `entry`: the copy has no CFI, so the default stack check cannot unwind a thread
    // stopped in it and would wait (docs/design.md, "Limits today").
    let disable = ws.swpatch("disable", "\(target.pid)", "fix-stay", "--consistency", "entry")
    #expect(disable.status == 0, "\(disable.output)")
    #expect(waitForThread(of: target.pid, inSyscall: 34, at: stay + 2), "not moved back to stay+2")
    #expect(target.keepsRunning())
  }

  /// The same, in code that cannot be relocated (`loop` has no long form): the thread is
  /// let run to leave, it never does, and the operation is refused with nothing changed.
  @Test func threadThatNeverLeavesUnmovableBytesRefusesTheOperation() throws {
    let ws = Workspace()
    let target = try Fixture("sled", ["20", "unmovable"])
    #expect(target.waitForValue("sled", "100"))
    let unmovable = try address(of: "unmovable", in: target, workspace: ws)
    #expect(waitForThread(of: target.pid, inSyscall: 34, at: unmovable + 2))
    let patch = ws.patchFile(
      "fix-unmovable", library: "libsled.so", functions: [("unmovable", "unmovable_v2")])
    try expectRefusedAttach(
      target, ws, patch, code: "thread_in_rewritten_bytes", mentions: ["thread", "inside bytes"],
      watch: unmovable, options: ["--consistency", "entry"])
    #expect(waitForThread(of: target.pid, inSyscall: 34, at: unmovable + 2), "the thread left pause()")
  }
}

/// The state letter of a process (R, S, T, t...).
func processState(_ pid: pid_t) -> String? {
  let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
  let line = status.split(separator: "\n").first { $0.hasPrefix("State:") }
  return line.map { String($0.dropFirst(6).trimmingCharacters(in: .whitespaces).prefix(1)) }
}

/// Waits (up to 5 s) for the process to reach state `letter`: a detach that delivers
/// SIGSTOP takes effect a moment later.
func waitForState(_ pid: pid_t, _ letter: String) -> Bool {
  for _ in 0..<500 {
    if processState(pid) == letter { return true }
    usleep(10_000)
  }
  return false
}

/// The program counter of a stopped main thread: the last field of /proc/PID/syscall
/// (`-1 SP PC` outside a system call, `NR ARGS... SP PC` inside one).
func stoppedProgramCounter(_ pid: pid_t) -> UInt64? {
  guard let text = try? String(contentsOfFile: "/proc/\(pid)/syscall", encoding: .utf8) else {
    return nil
  }
  guard let last = text.split(whereSeparator: \.isWhitespace).last, last.hasPrefix("0x") else {
    return nil
  }
  return UInt64(last.dropFirst(2), radix: 16)
}

/// Waits (up to `tries` × 10 ms, 5 s by default) until some thread of `pid` is blocked
/// in syscall `number` with its program counter at `pc`.
func waitForThread(of pid: pid_t, inSyscall number: Int, at pc: UInt64, tries: Int = 500) -> Bool {
  for attempt in 0..<tries {
    if attempt > 0 { usleep(10_000) }
    let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []
    for tid in tasks {
      let text = (try? String(contentsOfFile: "/proc/\(pid)/task/\(tid)/syscall", encoding: .utf8)) ?? ""
      let fields = text.split(whereSeparator: \.isWhitespace)
      if fields.first == "\(number)", let last = fields.last, UInt64(last.dropFirst(2), radix: 16) == pc {
        return true
      }
    }
  }
  return false
}
