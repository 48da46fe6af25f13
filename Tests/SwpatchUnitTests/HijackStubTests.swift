import Glibc
import Testing

@testable import SwpatchProcess

/// The restore block the hijack stub reads, and where a resumed thread executes: pure
/// layout checks (the integration tests run the stub for real).
@Suite struct HijackStubTests {
  static func registers(rax: Int64, origRax: Int64) -> user_regs_struct {
    var regs = user_regs_struct()
    (regs.r15, regs.r14, regs.r13, regs.r12, regs.r11, regs.r10, regs.r9, regs.r8) = (
      15, 14, 13, 12, 11, 10, 9, 8
    )
    (regs.rdi, regs.rsi, regs.rbp, regs.rbx, regs.rdx, regs.rcx) = (7, 6, 5, 4, 3, 2)
    regs.rax = UInt64(bitPattern: rax)
    regs.orig_rax = UInt64(bitPattern: origRax)
    regs.eflags = 0x246
    regs.rsp = 0x7ffd_0000_1008
    regs.rip = 0x5555_0000_1234
    return regs
  }

  static func word(_ bytes: [UInt8], at offset: Int) -> UInt64 {
    (0..<8).reduce(0) { $0 | UInt64(bytes[offset + $1]) << (8 * $1) }
  }

  @Test func blockHoldsTheXsaveImageAlignedAndTheRegistersInPopOrder() {
    let saved = Self.registers(rax: 7, origRax: -1)
    let xsave = (0..<832).map { UInt8(truncatingIfNeeded: $0) }
    let top = saved.rsp - 136 - 40
    let block = HijackStub.block(saved: saved, xsave: xsave, below: top)
    #expect(block.address % 64 == 0)
    #expect(block.address + UInt64(block.bytes.count) == top)
    #expect(Array(block.bytes[64..<64 + xsave.count]) == xsave)
    let skip = Int(Self.word(block.bytes, at: 0))
    #expect(skip >= 64 + xsave.count)
    let popped = (0..<17).map { Self.word(block.bytes, at: skip + $0 * 8) }
    #expect(popped == [15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 7, 0x246, saved.rsp - 136])
    #expect(block.resume == saved.rip)
  }

  @Test func threadInARestartableCallResumesOnItsSyscallInstruction() {
    for error in [-512, -513, -514, -516] as [Int64] {
      let saved = Self.registers(rax: error, origRax: 230)
      let block = HijackStub.block(saved: saved, xsave: [], below: saved.rsp - 136)
      let skip = Int(Self.word(block.bytes, at: 0))
      #expect(block.resume == saved.rip - 2)
      #expect(Self.word(block.bytes, at: skip + 14 * 8) == 230, "rax must be the call number again")
    }
    let finished = Self.registers(rax: -4, origRax: 230)  // EINTR is the program's to see
    #expect(HijackStub.block(saved: finished, xsave: [], below: finished.rsp - 136).resume == finished.rip)
  }

  @Test func aThreadIsInsideBytesPastTheFirstOrOnASyscallItWillRestart() {
    let entry: UInt64 = 0x1000
    var regs = Self.registers(rax: 0, origRax: -1)
    regs.rip = entry
    #expect(!StoppedTarget.executes(inside: entry..<entry + 5, regs))
    regs.rip = entry + 3
    #expect(StoppedTarget.executes(inside: entry..<entry + 5, regs))
    regs.rip = entry + 5
    #expect(!StoppedTarget.executes(inside: entry..<entry + 5, regs))
    regs.rip = entry + 2
    regs.rax = UInt64(bitPattern: -514)
    regs.orig_rax = 34
    #expect(StoppedTarget.executes(inside: entry..<entry + 5, regs))
    regs.rip = entry + 7
    #expect(!StoppedTarget.executes(inside: entry..<entry + 5, regs))
  }

  @Test func theStubFitsTheTrampolinePageHeader() {
    #expect(HijackStub.bytes.count <= 63)
    #expect(HijackStub.bytes[Int(HijackStub.syscallEntry)..<Int(HijackStub.afterSyscall)] == [0x0f, 0x05])
    #expect(
      HijackStub.bytes[Int(HijackStub.callReturnMarker) - 2..<Int(HijackStub.callReturnMarker)] == [
        0x0f, 0x05,
      ])
  }
}

/// The daemon reads SO_PEERCRED into process control's Swift struct: its layout must be
/// the kernel's `struct ucred`, or every caller would get garbage credentials.
@Test func peerCredentialsHaveTheKernelsLayout() {
  #expect(KernelPeerCredentials.matchesKernelLayout)
}
