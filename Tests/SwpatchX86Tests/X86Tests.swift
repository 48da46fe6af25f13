import Testing

@testable import SwpatchX86

@Test func nearJumpEncodesDisplacementFromTheNextInstruction() {
  #expect(X86.nearJump(from: 0x1000, to: 0x1005) == [0xe9, 0, 0, 0, 0])
  #expect(X86.nearJump(from: 0x1000, to: 0x2000) == [0xe9, 0xfb, 0x0f, 0, 0])
  #expect(X86.nearJump(from: 0x2000, to: 0x1000) == [0xe9, 0xfb, 0xef, 0xff, 0xff])
}

@Test func nearJumpRefusesTargetsBeyondTwoGiB() {
  #expect(X86.nearJump(from: 0x1000, to: 0x1000 + (1 << 31) + 5) == nil)
  #expect(X86.nearJump(from: 0x1000, to: 0x1000 + (1 << 31) - 1 + 5) != nil)
  #expect(X86.nearJump(from: 0x7f00_0000_0000, to: 0x5555_0000_0000) == nil)
}

@Test func absoluteJumpIsRipRelativeIndirectWithInlineTarget() {
  let bytes = X86.absoluteJump(to: 0x1122_3344_5566_7788)
  #expect(bytes.count == X86.absoluteJumpLength)
  #expect(Array(bytes.prefix(6)) == [0xff, 0x25, 0, 0, 0, 0])
  #expect(Array(bytes.suffix(8)) == [0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11])
}

@Test func jumpGoesAfterEndbr64() {
  #expect(X86.jumpSite(functionAt: 0x4000, code: [0xf3, 0x0f, 0x1e, 0xfa, 0x55]) == 0x4004)
  #expect(X86.jumpSite(functionAt: 0x4000, code: [0x55, 0x48, 0x89, 0xe5]) == 0x4000)
}

@Test func slotJumpsThroughItsAlignedCell() {
  let slot = TrampolineSlot.bytes(target: 0xdead_beef)
  #expect(slot.count == Int(TrampolineSlot.size))
  #expect(Array(slot.prefix(4)) == X86.endbr64)
  // ff 25 disp32 at offset 4; rip after it is 10, so disp 6 reaches the cell at 16.
  #expect(Array(slot[4..<10]) == [0xff, 0x25, 6, 0, 0, 0])
  #expect(TrampolineSlot.cellOffset % 8 == 0)
  #expect(Array(slot[16..<24]) == TrampolineSlot.cell(target: 0xdead_beef))
}

@Test func pageSlotsFitAfterTheTrapHeader() {
  #expect(TrampolinePageLayout.slotAddress(page: 0x10000, index: 0) == 0x10040)
  #expect(TrampolinePageLayout.slotAddress(page: 0x10000, index: 1) == 0x10060)
  let last = TrampolinePageLayout.slotAddress(page: 0, index: TrampolinePageLayout.slotCount - 1)
  #expect(last + TrampolineSlot.size <= TrampolinePageLayout.size)
  #expect(TrampolinePageLayout.freshBytes()[Int(TrampolinePageLayout.trapOffset)] == X86.int3)
}

@Test func freedSlotIsAllInt3() {
  #expect(TrampolineSlot.freed.count == Int(TrampolineSlot.size))
  #expect(TrampolineSlot.freed.allSatisfy { $0 == X86.int3 })
}

// looper: xor eax,eax; 1: add eax,edi; dec edi; jg 1b; ret. The loop lands at entry+2.
let looper: [UInt8] = [0x31, 0xc0, 0x01, 0xf8, 0xff, 0xcf, 0x7f, 0xfa, 0xc3]
// countdown: test edi,edi; jle 2f; dec edi; jmp countdown; 2: mov eax,7; ret.
let countdown: [UInt8] = [0x85, 0xff, 0x7e, 0x04, 0xff, 0xcf, 0xeb, 0xf8, 0xb8, 7, 0, 0, 0, 0xc3]

@Test func directBranchesAreDecodedWithTheirTargets() {
  #expect(BranchScan.directBranches(in: looper, at: 0x1000) == [DirectBranch(from: 0x1006, to: 0x1002)])
  #expect(
    BranchScan.directBranches(in: countdown, at: 0x1000) == [
      DirectBranch(from: 0x1002, to: 0x1008), DirectBranch(from: 0x1006, to: 0x1000),
    ])
  // call rel32 and jmp rel32 count too; an indirect jmp has no static target.
  let calls: [UInt8] = [0xe8, 0, 0, 0, 0, 0xe9, 0xf6, 0xff, 0xff, 0xff, 0xff, 0xe0]
  #expect(
    BranchScan.directBranches(in: calls, at: 0x2000) == [
      DirectBranch(from: 0x2000, to: 0x2005), DirectBranch(from: 0x2005, to: 0x2000),
    ])
}

@Test func onlyBranchesStrictlyInsideTheRewrittenBytesAreUnsafe() {
  #expect(BranchScan.branchesInto(0x1000..<0x1005, code: looper, at: 0x1000).map(\.to) == [0x1002])
  // A loop back to the entry itself lands on the new jump: safe.
  #expect(BranchScan.branchesInto(0x1000..<0x1005, code: countdown, at: 0x1000).isEmpty)
  // Past the endbr64, the jump site is entry+4: a branch to entry+4 is then safe too.
  #expect(
    BranchScan.branchesInto(0x1004..<0x1009, code: [0x90, 0x90, 0x90, 0x90] + countdown, at: 0x1000).isEmpty)
}

@Test func undecodableBytesAreSkippedNotFatal() {
  // 0x06 is invalid in 64-bit mode; the jmp after it is still found.
  #expect(
    BranchScan.directBranches(in: [0x06, 0xeb, 0xfd], at: 0x10) == [DirectBranch(from: 0x11, to: 0x10)])
}
