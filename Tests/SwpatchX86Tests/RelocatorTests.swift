import Testing

@testable import SwpatchX86

/// The relocator on a table of instruction forms: each relocated instruction must mean
/// what the original meant at its own address.
@Suite struct RelocatorTests {
  let from: UInt64 = 0x40_1000
  let near: UInt64 = 0x50_0040
  let far: UInt64 = 0x7f00_0000_0040

  func le32(_ bytes: [UInt8], at i: Int) -> Int64 {
    Int64(
      Int32(
        bitPattern: UInt32(bytes[i]) | UInt32(bytes[i + 1]) << 8 | UInt32(bytes[i + 2]) << 16
          | UInt32(bytes[i + 3]) << 24))
  }
  func le64(_ bytes: [UInt8], at i: Int) -> UInt64 {
    (0..<8).reduce(0) { $0 | UInt64(bytes[i + $1]) << (8 * $1) }
  }
  /// The absolute address a RIP-relative field at `disp` of an instruction ending at
  /// `end` (offset in `bytes`, placed at `base`) points to.
  func ripTarget(_ bytes: [UInt8], disp: Int, end: Int, base: UInt64) -> UInt64 {
    UInt64(bitPattern: Int64(bitPattern: base + UInt64(end)) + le32(bytes, at: disp))
  }
  /// The jump back at `offset` of the copy lands on `resume`.
  func jumpsBack(_ copy: RelocatedPrologue, at offset: Int, to resume: UInt64) -> Bool {
    let bytes = copy.bytes
    if bytes[offset] == 0xe9 {
      return ripTarget(bytes, disp: offset + 1, end: offset + 5, base: copy.address) == resume
    }
    return Array(bytes[offset..<offset + 6]) == [0xff, 0x25, 0, 0, 0, 0]
      && le64(bytes, at: offset + 6) == resume
  }

  @Test func positionIndependentInstructionsAreCopiedAsTheyAre() throws {
    // endbr64; push %rbp; mov %rsp,%rbp; sub $0x10,%rsp
    let code: [UInt8] = [0xf3, 0x0f, 0x1e, 0xfa, 0x55, 0x48, 0x89, 0xe5, 0x48, 0x83, 0xec, 0x10, 0xc3]
    let copy = try Relocator.relocate(code, from: from, to: near, covering: 5)
    #expect(copy.copiedLength == 5)
    #expect(Array(copy.bytes.prefix(5)) == Array(code.prefix(5)))
    #expect(jumpsBack(copy, at: 5, to: from + 5))
    #expect(copy.boundaries.map(\.original) == [0, 4, 5])
    #expect(copy.relocatedPC(for: from + 4, originalAt: from) == near + 4)
    #expect(copy.relocatedPC(for: from + 2, originalAt: from) == nil)  // not a boundary
  }

  @Test func ripRelativeLoadsStoresLeaAndCompareKeepTheirTargets() throws {
    let forms: [(code: [UInt8], disp: Int)] = [
      ([0x8b, 0x05, 0x00, 0x10, 0x00, 0x00], 2),  // mov 0x1000(%rip),%eax
      ([0x89, 0x05, 0x20, 0x00, 0x00, 0x00], 2),  // mov %eax,0x20(%rip)
      ([0x48, 0x8d, 0x3d, 0x00, 0x01, 0x00, 0x00], 3),  // lea 0x100(%rip),%rdi
      ([0x83, 0x3d, 0x10, 0x00, 0x00, 0x00, 0x05], 2),  // cmpl $5,0x10(%rip): imm after disp
    ]
    for form in forms {
      let code = form.code + [0xc3]
      let copy = try Relocator.relocate(code, from: from, to: near, covering: 5)
      let n = form.code.count
      #expect(copy.copiedLength == n)
      let original = ripTarget(code, disp: form.disp, end: n, base: from)
      #expect(ripTarget(copy.bytes, disp: form.disp, end: n, base: near) == original, "\(form.code)")
      // Everything but the displacement is unchanged.
      var masked = copy.bytes.prefix(n)
      masked.replaceSubrange(form.disp..<form.disp + 4, with: form.code[form.disp..<form.disp + 4])
      #expect(Array(masked) == form.code)
      #expect(jumpsBack(copy, at: n, to: from + UInt64(n)))
      #expect(throws: RelocationError.self) {
        try Relocator.relocate(code, from: from, to: far, covering: 5)
      }
    }
  }

  @Test func relativeCallsAndJumpsAreReEncodedForTheirOriginalTargets() throws {
    // call rel32 to from+5+0x200
    let call: [UInt8] = [0xe8, 0x00, 0x02, 0x00, 0x00, 0xc3]
    let nearCall = try Relocator.relocate(call, from: from, to: near, covering: 5)
    #expect(nearCall.bytes[0] == 0xe8)
    #expect(ripTarget(nearCall.bytes, disp: 1, end: 5, base: near) == from + 5 + 0x200)
    let farCall = try Relocator.relocate(call, from: from, to: far, covering: 5)
    #expect(Array(farCall.bytes.prefix(8)) == [0xff, 0x15, 0x02, 0, 0, 0, 0xeb, 0x08])
    #expect(le64(farCall.bytes, at: 8) == from + 5 + 0x200)
    #expect(jumpsBack(farCall, at: 16, to: from + 5))
    // jmp rel8 and jmp rel32 outward
    for (code, target) in [
      ([0xeb, 0x10, 0x90, 0x90, 0x90, 0x90] as [UInt8], from + 2 + 0x10),
      ([0xe9, 0x00, 0x01, 0x00, 0x00], from + 5 + 0x100),
    ] {
      let copy = try Relocator.relocate(code, from: from, to: near, covering: code[0] == 0xeb ? 2 : 5)
      #expect(copy.bytes[0] == 0xe9)
      #expect(ripTarget(copy.bytes, disp: 1, end: 5, base: near) == target)
      let away = try Relocator.relocate(code, from: from, to: far, covering: 2)
      #expect(Array(away.bytes.prefix(6)) == [0xff, 0x25, 0, 0, 0, 0])
      #expect(le64(away.bytes, at: 6) == target)
    }
  }

  @Test func conditionalJumpsKeepTheirConditionNearAndFar() throws {
    // test %edi,%edi; je +3 (to offset 7, past the copy); xor %eax,%eax; ret; lea 1(%rdi),%eax
    let code: [UInt8] = [0x85, 0xff, 0x74, 0x03, 0x31, 0xc0, 0xc3, 0x8d, 0x47, 0x01, 0xc3]
    let copy = try Relocator.relocate(code, from: from, to: near, covering: 5)
    #expect(copy.copiedLength == 6)
    #expect(Array(copy.bytes.prefix(4)) == [0x85, 0xff, 0x0f, 0x84])  // je rel32
    #expect(ripTarget(copy.bytes, disp: 4, end: 8, base: near) == from + 7)
    #expect(Array(copy.bytes[8..<10]) == [0x31, 0xc0])
    #expect(jumpsBack(copy, at: 10, to: from + 6))
    let away = try Relocator.relocate(code, from: from, to: far, covering: 5)
    // jne over an absolute jump to from+7
    #expect(Array(away.bytes[2..<4]) == [0x75, 14])
    #expect(Array(away.bytes[4..<10]) == [0xff, 0x25, 0, 0, 0, 0])
    #expect(le64(away.bytes, at: 10) == from + 7)
  }

  @Test func aBranchBetweenCopiedInstructionsStaysInsideTheCopy() throws {
    // je +1 (to the ret at offset 3); nop; ret; then more code
    let code: [UInt8] = [0x74, 0x01, 0x90, 0xc3, 0x90, 0x90]
    let copy = try Relocator.relocate(code, from: from, to: far, covering: 4)
    #expect(copy.copiedLength == 4)
    #expect(Array(copy.bytes.prefix(2)) == [0x0f, 0x84])
    let target = ripTarget(copy.bytes, disp: 2, end: 6, base: far)
    let retInCopy = try #require(copy.relocatedPC(for: from + 3, originalAt: from))
    #expect(target == retInCopy)
    #expect(copy.bytes[Int(retInCopy - far)] == 0xc3)  // a ret inside the copy stays a ret
  }

  @Test func loopAndUndecodableBytesAreRefused() {
    #expect(throws: RelocationError.unsupported(instruction: "loop", offset: 0)) {
      try Relocator.relocate([0xe2, 0xfe, 0x90, 0x90, 0x90, 0x90], from: from, to: near, covering: 5)
    }
    #expect(throws: RelocationError.tooShort(available: 2, needed: 5)) {
      try Relocator.relocate([0x31, 0xc0], from: from, to: near, covering: 5)
    }
    #expect(throws: RelocationError.self) {
      try Relocator.relocate([0x0f, 0x0b, 0xff, 0xff, 0xff, 0xff, 0xff], from: from, to: near, covering: 5)
    }
  }
}
