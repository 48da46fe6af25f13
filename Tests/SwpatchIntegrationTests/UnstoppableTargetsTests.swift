import Foundation
import Glibc
import Testing

/// Targets that our injected calls would kill, or that cannot be stopped for now: each
/// is refused before anything is touched, or patched safely.
@Suite(.serialized, .needsRoot, .needsFixtures) struct UnstoppableTargetsTests {
  /// In strict mode the first injected mmap would be answered with SIGKILL. The fixture
  /// cannot handle SIGTERM in strict mode (no sigaction, no rt_sigreturn of its own);
  /// its default action ends it, and `Fixture.stop` falls back to SIGKILL.
  @Test func seccompStrictModeIsRefusedUntouched() throws {
    let ws = Workspace()
    let target = try Fixture("seccomp-strict", ["600"])
    #expect(target.waitForValue("compute", "42"))
    let patch = ws.patchFile("fix-compute", library: "libfix.so", functions: [("compute", "compute_v2")])
    let compute = try address(of: "compute", in: target, workspace: ws)
    try expectRefusedAttach(
      target, ws, patch, code: "seccomp_strict", mentions: ["seccomp strict mode"], watch: compute)
    #expect(target.isAlive)
    #expect(everyThreadIsUntraced(target.pid))
  }

  /// A filter that kills on memfd_create: the attach suspends it while the target is
  /// seized (PTRACE_O_SUSPEND_SECCOMP), so the library goes in through a memfd and the
  /// target lives on, filtered again.
  @Test func aSeccompFilterIsSuspendedWhileThePatchGoesIn() throws {
    try expectPatchedUnderItsFilter(try Fixture("seccomp-filter"))
  }

  /// A thread waiting for its vfork child stops for nobody: the attach is refused at
  /// once, naming it, and the target runs on; once the child exits, the attach works.
  @Test func aThreadInVforkIsRefusedAtOnceAndAttachWorksAfter() throws {
    let ws = Workspace()
    let target = try Fixture("vforker", ["4"])
    #expect(target.waitForValue("compute", "42"))
    var waiter: pid_t?
    for _ in 0..<100 where waiter == nil {
      waiter = TestProcfs.threads(of: target.pid).first { TestProcfs.state($0, of: target.pid) == "D" }
      if waiter == nil { usleep(10_000) }
    }
    let tid = try #require(waiter, "no thread is waiting for its vfork child")
    let patch = ws.patchFile("fix-compute", library: "libfix.so", functions: [("compute", "compute_v2")])
    let compute = try address(of: "compute", in: target, workspace: ws)
    let start = ContinuousClock.now
    try expectRefusedAttach(
      target, ws, patch, code: "vfork_in_progress", mentions: ["thread \(tid)", "vfork"], watch: compute)
    #expect(ContinuousClock.now - start < .seconds(6), "two refusals took too long")
    #expect(target.output.wait(timeout: 10) { $0.hasPrefix("vfork=done") } != nil)
    let attach = ws.swpatch("attach", "\(target.pid)", patch)
    #expect(attach.status == 0, "\(attach.output)")
    #expect(target.waitForValue("compute", "63", from: target.output.count))
    #expect(target.keepsRunning())
  }
}

/// A target under a seccomp filter that would refuse or kill swpatch's remote calls:
/// `compute` is patched (42 -> 63), and the target lives on, untraced, filtered again.
func expectPatchedUnderItsFilter(_ target: Fixture, sourceLocation: SourceLocation = #_sourceLocation) throws
{
  let ws = Workspace()
  #expect(target.waitForValue("compute", "42"), sourceLocation: sourceLocation)
  let patch = ws.patchFile("fix-compute", library: "libfix.so", functions: [("compute", "compute_v2")])
  let attach = ws.swpatch("attach", "\(target.pid)", patch)
  #expect(attach.status == 0, "\(attach.output)", sourceLocation: sourceLocation)
  #expect(target.waitForValue("compute", "63", from: target.output.count), sourceLocation: sourceLocation)
  #expect(target.keepsRunning(), sourceLocation: sourceLocation)
  #expect(everyThreadIsUntraced(target.pid), sourceLocation: sourceLocation)
  let status = try String(contentsOfFile: "/proc/\(target.pid)/status", encoding: .utf8)
  #expect(status.contains("Seccomp:\t2"), "the filter is gone", sourceLocation: sourceLocation)
}
