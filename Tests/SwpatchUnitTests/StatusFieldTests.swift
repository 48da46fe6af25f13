import Testing

@testable import SwpatchProcess

/// Fields of /proc/PID/status as `TargetProcess` reads them (found by their line's
/// prefix, without splitting the file).
@Suite struct StatusFieldTests {
  let status = """
    Name:\tnginx
    Umask:\t0022
    State:\tS (sleeping)
    Tgid:\t4242
    TracerPid:\t0
    Uid:\t33\t33\t33\t33
    Gid:\t33\t33\t33\t34
    ShdPnd:\t0000000000000100
    Seccomp:\t2
    """

  @Test func fieldsAreFoundByTheirLinesPrefixWhereverTheLineIs() {
    #expect(TargetProcess.statusField("Uid:", in: status) == [33, 33, 33, 33])
    #expect(TargetProcess.statusField("Gid:", in: status) == [33, 33, 33, 34])
    #expect(TargetProcess.statusField("Tgid:", in: status) == [4242])
    #expect(TargetProcess.statusField("Seccomp:", in: status) == [2])
    #expect(TargetProcess.statusLine("ShdPnd:", in: status) == "\t0000000000000100")
    #expect(TargetProcess.statusLine("Name:", in: status) == "\tnginx")
  }

  @Test func aMissingKeyOrAKeyInsideALineIsNotFound() {
    #expect(TargetProcess.statusField("NoSuch:", in: status) == [])
    #expect(TargetProcess.statusLine("Pid:", in: status) == nil)  // only inside TracerPid:
    #expect(TargetProcess.statusLine("Uid:", in: "") == nil)
    #expect(TargetProcess.statusField("Uid:", in: "Uid:\t0\t0\t0\t0") == [0, 0, 0, 0])
  }
}
